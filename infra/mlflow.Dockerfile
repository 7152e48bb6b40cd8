# MLflow tracking server with the PostgreSQL driver and the S3 client it needs for the compose stack.
# The client side (segops) pins mlflow>=3.0; keep the server on the same major version.
FROM python:3.11-slim
ARG MLFLOW_VERSION=3.1.1
RUN pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" psycopg2-binary boto3 \
 && useradd --uid 1000 --create-home mlflow
USER 1000:1000
EXPOSE 5000
