# syntax=docker/dockerfile:1
# The ingest node (`landfall serve`). Build from the repository root:
#
#   docker build -f images/ingest-node.Dockerfile -t ghcr.io/landfall/ingest-node:0.1.0 .
#
# Node 24 runs the TypeScript sources directly (type stripping): no build step,
# the image holds src/ and the production dependencies of this one workspace.

# The base images are build arguments so an air-gapped builder (or the test
# bed, test/harness/images.ts) can use its own; the defaults are what users pull.
# RUNTIME_IMAGE must have Node 24 at /nodejs/bin/node, as distroless does.
ARG BUILD_IMAGE=node:24-bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12:nonroot

FROM ${BUILD_IMAGE} AS deps
WORKDIR /app
# Every workspace manifest: npm ci checks the lockfile against all of them.
COPY package.json package-lock.json ./
COPY ingest-node/package.json ingest-node/
COPY operator/package.json operator/
COPY test/package.json test/
# mkdir: a dependency npm cannot hoist would live in <workspace>/node_modules;
# the folders always exist so the COPY lines below never break.
RUN npm ci --omit=dev --workspace=ingest-node --no-audit --no-fund \
 && npm cache clean --force \
 && mkdir -p ingest-node/node_modules
# DuckDB's native binding (linux-x64: @duckdb/node-bindings-linux-x64) must be
# here and load: fail the build, not the first View at runtime.
RUN node -e "import('@duckdb/node-api').then(async (d) => { const db = await d.DuckDBInstance.create(':memory:'); const c = await db.connect(); await c.run('select 1'); c.closeSync(); })"

FROM ${RUNTIME_IMAGE}
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=deps /app/ingest-node/node_modules ./ingest-node/node_modules
COPY ingest-node/package.json ingest-node/
COPY ingest-node/src ingest-node/src
# Parquet work runs in child processes under a hard address-space limit
# (ingest-node/src/parquet/isolated.ts), set with `ulimit -v` in /bin/sh: Node
# cannot set a child's rlimits and distroless has no shell. dash needs only
# libc, which the runtime image has; nothing else of the build image comes along.
COPY --from=deps /usr/bin/dash /bin/sh
# nonroot is UID/GID 65532, as the operator's StatefulSets require (runAsUser: 65532).
USER 65532:65532
EXPOSE 8080
# The entrypoint is the node CLI (`landfall`); arguments replace CMD. The
# operator's pods run `serve --config /etc/landfall/config/config.json`, the one
# config file it renders into the Endpoint's ConfigMap
# (operator/src/model/resources.ts). `docker run IMAGE --help` lists the commands.
ENTRYPOINT ["/nodejs/bin/node", "/app/ingest-node/src/cli.ts"]
CMD ["serve"]
