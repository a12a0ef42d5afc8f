/* Headers bound by bindgen for precursor-ffi's `rdma` feature (rdma-core 44),
 * and one-line wrappers over verbs' `static inline` fast path and macros, which
 * bindgen cannot link to (see verbs_shim.c). */
#ifndef PRECURSOR_VERBS_SHIM_H
#define PRECURSOR_VERBS_SHIM_H

#include <stdint.h>
#include <stddef.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

int prc_ibv_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr);
int prc_ibv_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr);
int prc_ibv_poll_cq(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc);
int prc_ibv_req_notify_cq(struct ibv_cq *cq, int solicited_only);
/* ibv_query_port is a macro over the static inline ___ibv_query_port. */
int prc_ibv_query_port(struct ibv_context *context, uint8_t port_num,
                       struct ibv_port_attr *port_attr);
/* ibv_reg_mr is a macro picking ibv_reg_mr or ibv_reg_mr_iova2 by the flags. */
struct ibv_mr *prc_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access);
/* The calling thread's errno (a thread-local macro in C). */
int prc_ibv_errno(void);

#endif
