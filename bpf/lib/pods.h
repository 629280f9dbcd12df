/* Is the calling task in an enrolled pod? Pods are enrolled by their pod
 * cgroup; their containers are child cgroups, so ancestors are searched too. */
#ifndef NODEMESH_PODS_H
#define NODEMESH_PODS_H

#include "maps.h"

static __always_inline struct nm_pod *enrolled_pod(__u64 *cgroup_id)
{
    __u64 id = bpf_get_current_cgroup_id();
    struct nm_pod *pod = enrolled.lookup(&id);

    *cgroup_id = id;
    if (pod)
        return pod;
#pragma unroll
    for (int level = 1; level <= NM_MAX_CGROUP_DEPTH; level++) {
        __u64 anc = bpf_get_current_ancestor_cgroup_id(level);
        if (anc == 0 || anc == id)
            break;
        pod = enrolled.lookup(&anc);
        if (pod)
            return pod;
    }
    return NULL;
}

#endif
