# The image of the rollback flows and of their Prefect worker (deployments/kubernetes/).
#   docker build -t ghcr.io/acme/rollback-flows:0.1.0 .
# The code is in /opt/rollback-flows (ROLLBACK_FLOWS_HOME when deploying prefect.yaml); the
# shipped configuration (deployments/*.yaml) is read from there unless the ROLLBACK_FLOWS_*
# settings point elsewhere. No credentials: tokens and webhooks live in Prefect Secret blocks.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_HOME=/tmp/prefect

WORKDIR /opt/rollback-flows
COPY pyproject.toml README.md prefect.yaml ./
COPY flows/ flows/
COPY tasks/ tasks/
COPY playbook/ playbook/
COPY receiver/ receiver/
COPY stack/ stack/
COPY deployments/ deployments/
# Editable: the flows read their shipped configuration from deployments/ beside the code.
RUN pip install --no-compile -e . \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp rollback-flows

USER 10001:10001
CMD ["prefect", "worker", "start", "--pool", "rollback-flows", "--type", "kubernetes"]
