# The alluxiofs image: one `alluxiofs` command for the cache worker
# (`alluxiofs worker`), the client tools, the FUSE mount and the CSI node
# plugin (`alluxiofs csi`), as deploy/kubernetes runs them.
#
#   docker build -t alluxiofs:0.1.0 .
#
# The build stage runs `make wheel` (docs/kubernetes.md, "The image"): its
# system-deps step installs the Debian packages the build needs, its venv
# step the Python tools of requirements-dev.txt, then the release wheel goes
# to dist/. The runtime stage installs only that wheel (and the fsspec
# backends the clients fall back to) on a slim Python of the same Debian
# release, so the glibc the wheel was built against is there.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN make wheel

FROM python:3.11-slim-bookworm
# fuse3: fusermount3, which the FUSE mount (and so the CSI plugin) needs
# to mount and unmount; ca-certificates: HTTPS to object stores.
RUN apt-get update \
    && apt-get install -y --no-install-recommends fuse3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/dist/ /tmp/wheels/
RUN pip install --no-cache-dir --disable-pip-version-check \
        "$(ls /tmp/wheels/alluxiofs-*.whl)[s3,gcs,azure]" \
    && rm -rf /tmp/wheels \
    && alluxiofs worker --version
ENTRYPOINT ["alluxiofs"]
CMD ["--help"]
