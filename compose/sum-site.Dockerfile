# The default image for a SUM client site (real SUM client repos ship no
# Dockerfile). sumbg builds it from `git archive` of the requested ref, with
# .sumbg/ added to the context: ca.crt (empty unless [build] ca_bundle is set).
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
RUN (getent passwd app >/dev/null || useradd --uid 1000 --user-group --home-dir /app --no-create-home app) \
    && mkdir -p /app /srv/static /srv/media && chown app:app /srv/static /srv/media
WORKDIR /app
COPY .sumbg/ca.crt /etc/sumbg-ca.crt
COPY requirements.txt /app/requirements.txt
COPY vendor/ /app/vendor/
# Dependencies first, so a release that changes only code reuses this layer.
RUN if [ -s /etc/sumbg-ca.crt ]; then export PIP_CERT=/etc/sumbg-ca.crt; fi \
    && python3 -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --find-links /app/vendor -r /app/requirements.txt
COPY --chown=app:app . /app
ARG GIT_SHA=unknown
ARG BUILD_ID=unknown
ENV GIT_SHA=${GIT_SHA} BUILD_ID=${BUILD_ID}
USER app
EXPOSE 8000
CMD ["sh", "-c", "exec gunicorn \"${SUMBG_WSGI:-wsgi:application}\" --bind 0.0.0.0:8000"]
