# sip-edge container image.
#   Build: docker build -t sip-edge .
#   Run:   docker run -d --name sip-edge -p 5060:5060/udp -p 5060:5060/tcp \
#            -e SIPEDGE_UPSTREAMS=udp:10.0.0.5:5060 -e SIPEDGE_ADVERTISE=203.0.113.10 \
#            -e SIPEDGE_DOMAINS=pbx.example.com sip-edge
# Every flag has a SIPEDGE_* variable (`docker run sip-edge --help`); a full config file can be
# mounted and named with SIPEDGE_CONFIG. deploy/compose.yaml runs it with Redis, Prometheus and
# Grafana.
#
# Node: the code runs on Node 20 (the development machines) and on the current LTS lines; the
# image ships Node 24, an LTS line with security support until April 2028 (Node 20's ended in
# April 2026). Tested: the suite's protocol, config and CLI files under Node 24.22 and 26.12.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY edge ./edge
COPY geoip ./geoip
COPY lib ./lib
# production build: the edge, geoip and lib only (no tests, no benchmarks), then runtime deps only
RUN npx tsc -p tsconfig.build.json && npm prune --omit=dev

FROM ${NODE_IMAGE}
WORKDIR /app
ENV NODE_ENV=production \
    SIPEDGE_LISTEN="udp:0.0.0.0:5060 tcp:0.0.0.0:5060" \
    SIPEDGE_METRICS="127.0.0.1:9090"
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json sip-edge.yaml ./
# the shipped rule files; mount your own directory and set SIPEDGE_RULES to use it
COPY rules/*.yaml ./rules/
COPY rules/lists ./rules/lists
# non-root: SIP on 5060 needs no privilege (map a low port on the host side if you must)
USER node
EXPOSE 5060/udp 5060/tcp 9090/tcp
# /healthz on the admin listener SIPEDGE_METRICS names (edge/healthcheck.ts)
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["node", "dist/edge/healthcheck.js"]
ENTRYPOINT ["node", "dist/edge/cli.js"]
CMD ["run"]
