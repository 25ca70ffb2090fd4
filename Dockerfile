# TaskFlow service image: `taskflow api`, `taskflow worker`, `taskflow migrate`.
# No secrets are baked in: every setting comes from the environment at run time.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY taskflow ./taskflow
COPY actors ./actors
COPY web ./web
COPY migrations ./migrations
RUN pip install -e ".[dashboard]" && useradd --create-home taskflow
USER taskflow
ENV TASKFLOW_HOST=0.0.0.0 TASKFLOW_LOG_JSON=true
EXPOSE 8000
ENTRYPOINT ["taskflow"]
CMD ["up"]
