# A build's toolchain (sumbg/adapters/wheels.py): the site's Python image plus what compiling
# needs ([build] build_packages) and two venvs. Tagged sumbg-toolchain:<hash of all that>, built
# once per host and shared by every site with the same settings. Used twice per build:
#   - a one-off container resolves the requirements into wheels with the host's wheel cache
#     mounted (/sumbg-build: pinned pip, setuptools, wheel; never part of an image);
#   - the image build's first stages start FROM it and install those wheels into /venv, which
#     alone goes into the final image.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}
ARG BUILD_PACKAGES=""
ARG PIP_VERSION
ARG SETUPTOOLS_VERSION
ARG WHEEL_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# The CA bundle first: a changed bundle gives a whole new toolchain (the benchmark's cold builds rely on it).
COPY ca.crt /etc/sumbg-ca.crt
RUN if [ -n "$BUILD_PACKAGES" ]; then \
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $BUILD_PACKAGES >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi
RUN if [ -s /etc/sumbg-ca.crt ]; then export PIP_CERT=/etc/sumbg-ca.crt; fi \
    && python3 -m venv /venv \
    && python3 -m venv /sumbg-build \
    && /sumbg-build/bin/pip install --quiet --no-cache-dir \
        "pip==${PIP_VERSION}" "setuptools==${SETUPTOOLS_VERSION}" "wheel==${WHEEL_VERSION}"
