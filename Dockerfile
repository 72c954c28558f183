# The monitor's image. By default it runs a streaming worker on the compose network's broker;
# docker-compose.yml runs the same image as `monitor topics create`, `monitor simulate --live`
# and `monitor webhook`. Build: docker build -t model-business-monitor:0.1.0 .

# Build stage: the project, with its engine compiled (MONITOR_COMPILE=1, mypyc: docs/development.md "Compiled
# engine"), and its dependencies into a virtual environment. The full image has the C compiler.
FROM python:3.11.11-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/monitor
WORKDIR /src
COPY pyproject.toml README.md setup.py build_backend.py ./
COPY monitor ./monitor
COPY agents ./agents
RUN MONITOR_COMPILE=1 /opt/monitor/bin/pip install . && /opt/monitor/bin/pip uninstall --yes pip

# Run stage: the environment only, as an unprivileged user.
FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/monitor monitor
COPY --from=build /opt/monitor /opt/monitor
# The bundled example spec, so the default command runs; compose mounts its own over it.
COPY monitor/checkout.toml /etc/monitor/checkout.toml
ENV PATH=/opt/monitor/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER monitor
WORKDIR /home/monitor
# /metrics and /healthz of the worker
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["monitor", "health", "--web-port", "6066"]
CMD ["monitor", "worker", "--spec", "/etc/monitor/checkout.toml", "--bootstrap", "kafka:9092", \
     "--web-host", "0.0.0.0", "--web-port", "6066"]
