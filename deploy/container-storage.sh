# Sourced by deploy/image.sh and the container tests: the buildah/podman
# global options for the storage to use. VIRTGATE_CONTAINER_ROOT set: a
# private storage there (overlay driver; the tests use one, so they leave
# the system's images alone); unset: the system's own storage.
ctr_opts=()
if [ -n "${VIRTGATE_CONTAINER_ROOT:-}" ]; then
  ctr_opts=(--root "$VIRTGATE_CONTAINER_ROOT/storage" --runroot "$VIRTGATE_CONTAINER_ROOT/run"
            --storage-driver overlay)
fi
