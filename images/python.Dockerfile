# Local stand-in for python:3.x-slim where no registry is reachable.
ARG BASE
FROM ${BASE}
RUN ln -sf /usr/bin/python3 /usr/local/bin/python
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8
CMD ["python3"]
