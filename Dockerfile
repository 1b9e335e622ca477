# Strata image: `strata` CLI (node bin/strata.js) on Node 20, running as a non-root user.
#   docker build -t strata:0.1.0 .
#   docker run --rm -p 7401:7401 -p 7402:7402 -v strata-data:/app/data strata:0.1.0          # all-in-one
#   docker run --rm strata:0.1.0 aggregator --config /etc/strata/config/aggregator.json      # one role
# Kubernetes runs it with args only (k8s/aggregator.yaml, k8s/gateway.yaml); the UID below is the
# runAsUser there. Checked by test/deploy/docker.test.ts.
ARG NODE_IMAGE=node:20-bookworm-slim

# 1. compile TypeScript (needs the dev dependencies)
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# `npm install` as locked, not `npm ci`: the registry mirror lacks other platforms' optional
# packages that the lock records, which `npm ci` refuses (see .ci/run)
RUN npm install --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build-info.mjs ./scripts/
COPY src ./src
# the commit `strata --version` and strata_build_info report (no .git in the image's context):
#   docker build --build-arg STRATA_COMMIT=$(git rev-parse HEAD) ...
ARG STRATA_COMMIT=""
RUN STRATA_COMMIT="${STRATA_COMMIT}" npm run build

# 2. production dependencies only (native modules come as prebuilt binaries for linux-x64/arm64)
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --omit=dev --no-audit --no-fund && npm cache clean --force

# 3. runtime: compiled code, production node_modules, protos; nothing else
FROM ${NODE_IMAGE}
ENV NODE_ENV=production
# glibc malloc (docs/capacity.md, aggregator memory): one arena, so that memory freed by one thread
# (LevelDB's memtables on libuv's pool, a flush worker's buffers) is reused by the others instead of
# kept per thread; and blocks of 1 MiB or more (gRPC's request messages, block chunks) mapped on
# their own and unmapped when freed, instead of fragmenting the heap, which glibc cannot give back
ENV MALLOC_ARENA_MAX=2
ENV MALLOC_MMAP_THRESHOLD_=1048576
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY proto ./proto
# ./data is the all-in-one's default filesystem bucket; /var/lib/strata holds WAL or cache volumes
RUN mkdir -p /app/data /var/lib/strata && chown 1000:1000 /app/data /var/lib/strata
# the `node` user of the official image, by number so Kubernetes can verify runAsNonRoot
USER 1000:1000
# aggregator gRPC and metrics, gateway gRPC and metrics
EXPOSE 7401 9401 7402 9402
ENTRYPOINT ["node", "bin/strata.js"]
CMD ["serve"]
