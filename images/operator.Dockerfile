# syntax=docker/dockerfile:1
# The operator (`landfall-operator`). Build from the repository root:
#
#   docker build -f images/operator.Dockerfile -t ghcr.io/landfall/operator:0.1.0 .
#
# The operator imports the ingest node's config loader and View compiler (it
# checks every config and compiles every View with the node's own code, on a
# compile-only DuckDB), so the image carries both workspaces' sources and
# production dependencies, DuckDB's native binding included.

# The base images are build arguments so an air-gapped builder (or the test
# bed, test/harness/images.ts) can use its own; the defaults are what users pull.
# RUNTIME_IMAGE must have Node 24 at /nodejs/bin/node, as distroless does.
ARG BUILD_IMAGE=node:24-bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12:nonroot

FROM ${BUILD_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY ingest-node/package.json ingest-node/
COPY operator/package.json operator/
COPY test/package.json test/
# mkdir: a dependency npm cannot hoist would live in <workspace>/node_modules;
# the folders always exist so the COPY lines below never break.
RUN npm ci --omit=dev --workspace=operator --workspace=ingest-node --no-audit --no-fund \
 && npm cache clean --force \
 && mkdir -p ingest-node/node_modules operator/node_modules
RUN node -e "import('@duckdb/node-api').then(async (d) => { const db = await d.DuckDBInstance.create(':memory:'); const c = await db.connect(); await c.run('select 1'); c.closeSync(); })"

FROM ${RUNTIME_IMAGE}
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=deps /app/ingest-node/node_modules ./ingest-node/node_modules
COPY --from=deps /app/operator/node_modules ./operator/node_modules
COPY ingest-node/package.json ingest-node/
COPY ingest-node/src ingest-node/src
COPY operator/package.json operator/
COPY operator/src operator/src
USER 65532:65532
EXPOSE 8080
# The chart passes the flags (--leader-elect, --namespace, --node-image, ...).
ENTRYPOINT ["/nodejs/bin/node", "/app/operator/src/main.ts"]
