# The default image for a SUM client site (real SUM client repos ship no Dockerfile).
# sumbg builds it (sumbg/adapters/build.py) with this build context:
#   app/                    `git archive` of the requested ref (never a working tree)
#   sumbg/wheels/index/     the third-party wheels the resolution chose: from the host's wheel cache,
#                           else downloaded or compiled by it (sumbg/adapters/wheels.py)
#   sumbg/wheels/local/     the client's own: wheels of the dependencies sumbg fetched from git
#                           (no credential in here; see sumbg/adapters/build.py), wheels the repo vendors
# and build arguments: TOOLCHAIN_IMAGE (the Python image + [build] build_packages + venvs, built by
# sumbg), PYTHON_IMAGE and PACKAGES from site.toml [build]. No pip step here reaches the network:
# the wheels were resolved before the build, in a one-off container with the wheel cache mounted
# (the legacy builder has no RUN --mount=type=cache), so the cache works with it and with BuildKit.
# Three stages keep a sum-core bump cheap: the third-party venv is one layer, reused (by Docker's
# layer cache, even across sites) while its wheels are byte for byte the same; the client's own
# packages go to /sumbg-local (on the venv's path through a .pth file), a small layer of their own.
# Compilers, -dev headers, the wheels and pip's work never reach the final image: it gets /venv,
# /sumbg-local, the app, and only the runtime packages the site asks for.
ARG PYTHON_IMAGE=python:3.12-slim
ARG TOOLCHAIN_IMAGE=sumbg-toolchain:unset

FROM ${TOOLCHAIN_IMAGE} AS third-party
COPY sumbg/wheels/index/ /sumbg-wheels/index/
RUN cd /sumbg-wheels/index \
    && if ls ./*.whl >/dev/null 2>&1; then \
        /venv/bin/pip install --quiet --no-index --no-deps --no-cache-dir --disable-pip-version-check ./*.whl; \
    fi \
    && /venv/bin/python -c "import sysconfig; open(sysconfig.get_paths()['purelib'] + '/sumbg-local.pth', 'w').write('import site; site.addsitedir(\"/sumbg-local\")\n')"

FROM third-party AS local
COPY sumbg/wheels/local/ /sumbg-wheels/local/
RUN mkdir -p /sumbg-local && cd /sumbg-wheels/local \
    && if ls ./*.whl >/dev/null 2>&1; then \
        /venv/bin/pip install --quiet --no-index --no-deps --no-cache-dir --disable-pip-version-check \
            --target /sumbg-local ./*.whl; \
    fi \
    && /venv/bin/pip check --disable-pip-version-check

FROM ${PYTHON_IMAGE}
ARG PACKAGES=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/venv/bin:/sumbg-local/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if [ -n "$PACKAGES" ]; then \
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $PACKAGES >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi
RUN (getent passwd app >/dev/null || useradd --uid 1000 --user-group --home-dir /app --no-create-home app) \
    && mkdir -p /app /srv/static /srv/media && chown app:app /srv/static /srv/media
WORKDIR /app
EXPOSE 8000
CMD ["sh", "-c", "exec gunicorn \"${SUMBG_WSGI:-wsgi:application}\" --bind 0.0.0.0:8000"]
COPY --from=third-party /venv /venv
COPY --from=local /sumbg-local /sumbg-local
ARG GIT_SHA=unknown
ARG BUILD_ID=unknown
ENV GIT_SHA=${GIT_SHA} BUILD_ID=${BUILD_ID}
COPY --chown=app:app app/ /app/
USER app
