#!/bin/sh
# Smoke test of the soft-RoCE guest: `ci/rdma-guest.sh --script ci/rdma-guest/smoke.sh`.
# The device is there and usable, an RC send/recv latency pair (perftest, GID index 1 =
# the IPv4-mapped GID) and an rdma_cm pair both pass. Numbers under TCG mean nothing.
set -e
ibv_devinfo -d "$RXE_DEV"
rxe-pair ib_send_lat "ib_send_lat -d $RXE_DEV -x $RXE_GID_INDEX -n 1000" \
  "ib_send_lat -d $RXE_DEV -x $RXE_GID_INDEX -n 1000 $RXE_IP"
rxe-pair rping "rping -s -a $RXE_IP -C 10" "rping -c -a $RXE_IP -C 10 -v"
