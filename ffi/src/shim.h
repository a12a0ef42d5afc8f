/* One-line wrappers over DPDK's `static inline` fast-path functions and
 * thread-local macros, so Rust can call them (see shim.c). */
#ifndef PRECURSOR_SHIM_H
#define PRECURSOR_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

int prc_rte_errno(void);
unsigned prc_lcore_id(void);
uint64_t prc_rdtsc(void);
uint64_t prc_get_tsc_cycles(void);

uint16_t prc_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
                          uint16_t nb_pkts);
uint16_t prc_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
                          uint16_t nb_pkts);

struct rte_mbuf *prc_pktmbuf_alloc(struct rte_mempool *mp);
int prc_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void prc_pktmbuf_free(struct rte_mbuf *m);
char *prc_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *prc_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *prc_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int prc_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
void prc_pktmbuf_reset(struct rte_mbuf *m);
uint16_t prc_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t prc_pktmbuf_tailroom(const struct rte_mbuf *m);

unsigned prc_ring_enqueue_burst(struct rte_ring *r, void *const *obj_table, unsigned n,
                                unsigned *free_space);
unsigned prc_ring_dequeue_burst(struct rte_ring *r, void **obj_table, unsigned n,
                                unsigned *available);
unsigned prc_ring_count(const struct rte_ring *r);

#endif
