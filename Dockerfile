# One image for the control plane (`gantry serve`, the default) and for runners
# (`gantry runner`). Multi-stage: the first stage builds a wheel, the second installs it.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY runner ./runner
COPY client ./client
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# tini reaps zombies and forwards signals; bubblewrap sandboxes the local executor's tasks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/gantry gantry
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /home/gantry
ENV GANTRY_HOST=0.0.0.0 \
    GANTRY_PORT=8080 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "gantry"]
CMD ["serve"]
