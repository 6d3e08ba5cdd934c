# The default image for a SUM client site (real SUM client repos ship no Dockerfile).
# sumbg builds it with this build context (sumbg/build.py):
#   app/                    `git archive` of the requested ref (never a working tree)
#   sumbg/ca.crt            sumbg.toml [build] ca_bundle (empty when unset)
#   sumbg/requirements.txt  app/requirements.txt with each git+ requirement pointing at...
#   sumbg/deps/<name>-<commit>/  ...its source, fetched by sumbg on the host (no credential in here;
#                           why on the host and not with a BuildKit secret: see sumbg/build.py)
# and build arguments from site.toml [build] (python_image, build_packages, packages).
# Two stages: compilers, -dev headers and pip's work stay in `build`; the final image gets
# the finished /venv, the app, and only the runtime packages the site asks for.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ARG BUILD_PACKAGES=""
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
RUN if [ -n "$BUILD_PACKAGES" ]; then \
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $BUILD_PACKAGES >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi
COPY sumbg/ca.crt /etc/sumbg-ca.crt
WORKDIR /app
COPY sumbg/requirements.txt /app/requirements.txt
COPY app/vendor/ /app/vendor/
COPY sumbg/deps/ /sumbg-deps/
# Dependencies before the code, so a release that changes only code reuses these layers.
# The CA bundle is trusted by pip and by git (should a dependency itself pull a git URL).
RUN if [ -s /etc/sumbg-ca.crt ]; then export PIP_CERT=/etc/sumbg-ca.crt GIT_SSL_CAINFO=/etc/sumbg-ca.crt; fi \
    && python3 -m venv /venv \
    && /venv/bin/pip install --find-links /app/vendor -r /app/requirements.txt

FROM ${PYTHON_IMAGE}
ARG PACKAGES=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if [ -n "$PACKAGES" ]; then \
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $PACKAGES >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi
RUN (getent passwd app >/dev/null || useradd --uid 1000 --user-group --home-dir /app --no-create-home app) \
    && mkdir -p /app /srv/static /srv/media && chown app:app /srv/static /srv/media
COPY --from=build /venv /venv
WORKDIR /app
COPY --chown=app:app app/ /app/
ARG GIT_SHA=unknown
ARG BUILD_ID=unknown
ENV GIT_SHA=${GIT_SHA} BUILD_ID=${BUILD_ID}
USER app
EXPOSE 8000
CMD ["sh", "-c", "exec gunicorn \"${SUMBG_WSGI:-wsgi:application}\" --bind 0.0.0.0:8000"]
