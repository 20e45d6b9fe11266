# The node image without a registry or BuildKit: `scripts/docker-up.sh` builds the binaries and the console's page
# with the host's toolchain and stages them with this file in a small build context (bin/, static/, sample/).
# `debian:bookworm-slim` is made from Debian's packages by that script when no registry answers. The repository's
# own `Dockerfile` builds the same image from source where a registry (and its Rust image) is reachable.
FROM debian:bookworm-slim
# A named volume mounted on /var/lib/coffee starts as a copy of this folder, owner included: so the nodes,
# which run as `coffee`, can write their state there, and the console's volume starts with the bundled sample.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/coffee --shell /usr/sbin/nologin coffee \
    && mkdir -p /var/lib/coffee/data /usr/share/coffee/static \
    && chown -R coffee:coffee /var/lib/coffee
COPY bin/ /usr/local/bin/
COPY static/ /usr/share/coffee/static/
COPY --chown=coffee:coffee sample/ /var/lib/coffee/data/sample/
USER coffee
WORKDIR /var/lib/coffee
ENV STATE_DIR=/var/lib/coffee
EXPOSE 7070 8080
CMD ["coffee", "--help"]
