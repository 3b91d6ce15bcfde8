# One image per install group:
#   docker build --build-arg INSTALL_GROUP=serving  -t fraudops-serving .   (gRPC server, scorer)
#   docker build --build-arg INSTALL_GROUP=pipeline -t fraudops-pipeline .  (Airflow, MLflow, training)
#   docker build --build-arg INSTALL_GROUP=serving,stripe -t fraudops-stripe .  (Stripe endpoint)
#   docker build --build-arg INSTALL_GROUP=serving,console -t fraudops-console .  (analyst console)
# The serving image stays light: no TensorFlow, no Airflow (see pyproject.toml).

# The IP country database's pin: the Makefile's GEOIP_PACKAGE and GEOIP_VERSION (a test says so).
ARG GEOIP_PACKAGE=@ip-location-db/geo-whois-asn-country-mmdb
ARG GEOIP_VERSION=2.3.2026061719

# The console's React frontend, built from the committed lockfile (`make console-web` on a
# host does the same). Every image carries the result (about 0.5 MB); only the console
# serves it.
FROM node:22-slim AS console-web
WORKDIR /web
COPY console/web/package.json console/web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY console/web/ ./
RUN npm run build

# The IP country database, from the npm registry at build time (never at run time).
FROM node:22-slim AS geoip-db
ARG GEOIP_PACKAGE
ARG GEOIP_VERSION
WORKDIR /geoip
RUN npm pack --silent "${GEOIP_PACKAGE}@${GEOIP_VERSION}" && tar xzf *.tgz

FROM python:3.11-slim

ARG INSTALL_GROUP=serving
ARG GEOIP_PACKAGE
ARG GEOIP_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: DVC in the pipeline image; nothing extra for serving (psycopg2-binary bundles libpq).
RUN if [ "$INSTALL_GROUP" = "pipeline" ]; then \
        apt-get update && apt-get install -y --no-install-recommends git \
        && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY fraudops ./fraudops
COPY serving ./serving
COPY integrations ./integrations
COPY training ./training
COPY jobs ./jobs
COPY feature_checks ./feature_checks
COPY proto ./proto
COPY dags ./dags
COPY console/*.py ./console/
# Before the install: the package data puts it where the installed console looks for it.
COPY --from=console-web /web/dist ./console/web/dist
RUN pip install ".[${INSTALL_GROUP}]"
# Checked, recorded (package, version, build date) and placed where the settings look.
COPY --from=geoip-db /geoip/package /tmp/geoip
RUN python -m fraudops.geoip install --source /tmp/geoip/geo-whois-asn-country.mmdb \
        --dest build/geoip/geo-whois-asn-country.mmdb \
        --package "${GEOIP_PACKAGE}" --version "${GEOIP_VERSION}" \
    && cp /tmp/geoip/README.md /tmp/geoip/NRO_LICENSE build/geoip/ && rm -rf /tmp/geoip

RUN useradd --create-home --uid 10001 fraudops \
    && mkdir -p /app/models/serving /airflow /mlflow \
    && chown -R fraudops: /app /airflow /mlflow
USER fraudops

# The scorer and server read everything else from the environment (fraudops/settings.py).
CMD ["fraudops-serve"]
