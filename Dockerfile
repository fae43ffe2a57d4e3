# sip-edge container image. Build: docker build -t sip-edge .
# Run:   docker run --network host sip-edge run --listen udp:0.0.0.0:5060 --upstream udp:10.0.0.5:5060 --domain pbx.example.com
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY edge ./edge
COPY rules/*.yaml ./rules/
COPY geoip ./geoip
COPY lib ./lib
COPY test ./test
COPY bench ./bench
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/edge ./dist/edge
COPY --from=build /app/dist/geoip ./dist/geoip
COPY --from=build /app/dist/lib ./dist/lib
COPY package.json sip-edge.yaml ./
# the shipped rule files (stages, scanner, access, geoip, limits); mount your own over /app/rules
COPY rules/*.yaml ./rules/
COPY rules/lists ./rules/lists
USER node
EXPOSE 5060/udp 5060/tcp 9090/tcp
ENTRYPOINT ["node", "dist/edge/cli.js"]
CMD ["run"]
