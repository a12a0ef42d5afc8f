#!/bin/sh
# Runs inside the soft-RoCE guest (ci/rdma-guest.sh --script ci/rdma-guest/verbs.sh): the
# guest's own smoke (smoke.sh: the device, ib_send_lat, rping), then the verbs layer's
# examples, whose host paths the harness passes as VERBS_LOOPBACK and CM_LOOPBACK:
# - verbs_loopback: two RC queue pairs on rxe0, SEND/RECV, RDMA WRITE and READ;
# - cm_loopback: rdma_cm listen/connect/accept with private data, SEND/RECV through
#   MessageBuffers, READs of a ReadableRegion, a READ beyond it refused by the device,
#   flushes, a client that vanishes.
set -e
# The harness runs this from the host's working directory (the repository).
sh ci/rdma-guest/smoke.sh
"$VERBS_LOOPBACK" "$RXE_DEV" "$RXE_GID_INDEX"
"$CM_LOOPBACK" "$RXE_IP" 7471 2000
