/* IPv6 addresses as four __u32 in network order: copies, comparisons, and
 * the IPv4-mapped form (::ffff:a.b.c.d). */
#ifndef NODEMESH_ADDR_H
#define NODEMESH_ADDR_H

/* Which family's addresses a helper works on (a constant at each call
 * site, so each inlined copy keeps only its own family's code). */
#define NM_V4 0
#define NM_V6 1

/* Four words of an IPv6 address. From a context (NM_CTX_IP6), one 4-byte
 * load each: the compiler would otherwise merge two into an 8-byte load,
 * or walk a pointer over the context, both of which the verifier refuses. */
#define NM_COPY_IP6(dst, src) do {                                        \
        (dst)[0] = (src)[0]; (dst)[1] = (src)[1];                         \
        (dst)[2] = (src)[2]; (dst)[3] = (src)[3];                         \
    } while (0)
#define NM_CTX_WORD(x) (*(volatile __u32 *)&(x))
#define NM_CTX_IP6(dst, src) do {                                         \
        (dst)[0] = NM_CTX_WORD((src)[0]); (dst)[1] = NM_CTX_WORD((src)[1]); \
        (dst)[2] = NM_CTX_WORD((src)[2]); (dst)[3] = NM_CTX_WORD((src)[3]); \
    } while (0)
#define NM_CTX_SET_IP6(dst, src) do {                                     \
        NM_CTX_WORD((dst)[0]) = (src)[0]; NM_CTX_WORD((dst)[1]) = (src)[1]; \
        NM_CTX_WORD((dst)[2]) = (src)[2]; NM_CTX_WORD((dst)[3]) = (src)[3]; \
    } while (0)

static __always_inline int ip6_is_zero(const __u32 *a)
{
    return (a[0] | a[1] | a[2] | a[3]) == 0;
}

static __always_inline int ip6_equal(const __u32 *a, const __u32 *b)
{
    return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

/* ::ffff:a.b.c.d, words in network order */
static __always_inline int ip6_is_v4_mapped(const __u32 *a)
{
    return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

#endif
