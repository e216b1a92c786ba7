/* Prints the hwloc 2.x layouts the C# mirror in interop/LiveDlrm.Interop/Hwloc.cs relies on.
   Needs libhwloc-dev (only to re-check the layout; the project does not need it to build):
     gcc tests/LiveDlrm.Tests/Numa/hwloc_layout.c -lhwloc -o /tmp/hwloc_layout && /tmp/hwloc_layout
   HwlocInteropTests.ObjectLayoutMatchesHwloc29Header holds the numbers this printed for hwloc 2.9.0. */
#include <hwloc.h>
#include <stdio.h>
#include <stddef.h>
#define O(f) printf("%-22s %zu\n", #f, offsetof(struct hwloc_obj, f))
int main(void) {
  printf("sizeof(hwloc_obj) %zu\n", sizeof(struct hwloc_obj));
  O(type); O(subtype); O(os_index); O(name); O(total_memory); O(attr); O(depth); O(logical_index);
  O(next_cousin); O(prev_cousin); O(parent); O(sibling_rank); O(next_sibling); O(prev_sibling);
  O(arity); O(children); O(first_child); O(last_child); O(symmetric_subtree);
  O(memory_arity); O(memory_first_child); O(io_arity); O(io_first_child); O(misc_arity); O(misc_first_child);
  O(cpuset); O(complete_cpuset); O(nodeset); O(complete_nodeset); O(infos); O(infos_count); O(userdata); O(gp_index);
  printf("cache size %zu depth %zu linesize %zu assoc %zu type %zu sizeof %zu\n", offsetof(struct hwloc_cache_attr_s,size),
   offsetof(struct hwloc_cache_attr_s,depth), offsetof(struct hwloc_cache_attr_s,linesize), offsetof(struct hwloc_cache_attr_s,associativity),
   offsetof(struct hwloc_cache_attr_s,type), sizeof(struct hwloc_cache_attr_s));
  printf("numanode local_memory %zu\n", offsetof(struct hwloc_numanode_attr_s, local_memory));
  printf("types MACHINE %d PACKAGE %d CORE %d PU %d L1 %d L2 %d L3 %d GROUP %d NUMANODE %d DIE %d\n", HWLOC_OBJ_MACHINE, HWLOC_OBJ_PACKAGE, HWLOC_OBJ_CORE, HWLOC_OBJ_PU, HWLOC_OBJ_L1CACHE, HWLOC_OBJ_L2CACHE, HWLOC_OBJ_L3CACHE, HWLOC_OBJ_GROUP, HWLOC_OBJ_NUMANODE, HWLOC_OBJ_DIE);
  printf("HWLOC_API_VERSION 0x%x runtime 0x%x\n", HWLOC_API_VERSION, hwloc_get_api_version());
  printf("DEPTH_NUMANODE %d UNKNOWN %d MULTIPLE %d  CPUBIND_THREAD %d PROCESS %d STRICT %d\n", HWLOC_TYPE_DEPTH_NUMANODE, HWLOC_TYPE_DEPTH_UNKNOWN, HWLOC_TYPE_DEPTH_MULTIPLE, HWLOC_CPUBIND_THREAD, HWLOC_CPUBIND_PROCESS, HWLOC_CPUBIND_STRICT);
  hwloc_topology_t t; hwloc_topology_init(&t); hwloc_topology_load(t);
  int d = hwloc_get_type_depth(t, HWLOC_OBJ_PU); printf("PU depth %d count %d\n", d, hwloc_get_nbobjs_by_depth(t, d));
  printf("L3 depth %d NUMA count %d core depth %d pkg depth %d\n", hwloc_get_type_depth(t, HWLOC_OBJ_L3CACHE), hwloc_get_nbobjs_by_depth(t, HWLOC_TYPE_DEPTH_NUMANODE), hwloc_get_type_depth(t, HWLOC_OBJ_CORE), hwloc_get_type_depth(t, HWLOC_OBJ_PACKAGE));
  hwloc_topology_destroy(t);
  return 0;
}
