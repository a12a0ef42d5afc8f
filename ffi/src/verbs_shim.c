/* Hand-written C shim for the `rdma` feature: verbs' fast path is `static
 * inline` (dispatching through the provider's ops table) and ibv_query_port /
 * ibv_reg_mr are macros, none of which bindgen can link to. One line each. */
#include <errno.h>
#include <infiniband/verbs.h>

#include "verbs_shim.h"

int prc_ibv_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr)
{
    return ibv_post_send(qp, wr, bad_wr);
}

int prc_ibv_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr)
{
    return ibv_post_recv(qp, wr, bad_wr);
}

int prc_ibv_poll_cq(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc)
{
    return ibv_poll_cq(cq, num_entries, wc);
}

int prc_ibv_req_notify_cq(struct ibv_cq *cq, int solicited_only)
{
    return ibv_req_notify_cq(cq, solicited_only);
}

int prc_ibv_query_port(struct ibv_context *context, uint8_t port_num,
                       struct ibv_port_attr *port_attr)
{
    return ibv_query_port(context, port_num, port_attr);
}

struct ibv_mr *prc_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access)
{
    return ibv_reg_mr(pd, addr, length, access);
}

int prc_ibv_errno(void) { return errno; }
