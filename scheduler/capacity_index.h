#pragma once
// CapacityIndex: the free capacity of a fleet, indexed by shape, kept up to date with
// deltas. It answers "where should a slice / N whole GPUs / a gang go" under a placement
// policy in time independent of fleet size for slices (256 free-mask buckets) and
// proportional to the number of distinct free-GPU counts for whole GPUs.
//
// Identifiers are dense integers handed out by Add*: pools (one per GPU model), nodes and
// GPUs. A GPU is offered when it is usable and not reserved; its free mask is then
// ~(used | held). Invariants kept after every mutation:
//   - a GPU with free mask f != 0 is in exactly bucket f of its pool, else in none;
//   - a node with w >= 1 fully free GPUs is in fw_nodes[w] of its pool (and of its
//     fabric when it has one), else in none.
// A GPU with a fixed geometry (MIG mode: SetFixedSlices) is in no bucket and never fully
// free; each of its instances whose slots are free is in fixed_free[profile] instead.
// Nodes may also have a host size (CPU, memory): picks then pass over nodes without room
// for the demand, and the fragmentation measure counts GPU capacity a node's free host can
// no longer feed. The index keeps what is charged; the caller says what each job takes.

#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "scheduler/mask_table.h"
#include "surplus/gpu_models.h"

namespace surplus::scheduler {

enum class PackPolicy {
  /// Minimises the growth of expected unusable capacity under the workload's shape
  /// distribution (after "Beware of Fragmentation", ATC'23), extended to MIG placement
  /// tables and to node-level whole-GPU shapes, with best-fit tie breaks. It also charges
  /// capacity a placement destroys, credits fragments that big slices still to come will
  /// fill, and keeps whole nodes for the N-GPU jobs still to come (Recompute, NodeDelta).
  kFragmentationAware,
  /// Least free capacity that fits (GPU, then node).
  kBestFit,
  /// Lowest node / GPU / start that fits.
  kFirstFit,
};

/// Popularity of each shape in a pool's workload (any non-negative integer scale).
struct ShapeWeights {
  std::vector<int64_t> slice;  ///< per profile index; the whole-GPU profile is ignored
  std::vector<int64_t> whole;  ///< index N: N whole GPUs on one node (index 0 unused)
  /// Host CPU and memory the workload asks per GPU compute unit, on average (0 = not
  /// modelled). A node whose free CPU or memory cannot feed its free GPU units at this
  /// rate strands the rest; the fragmentation measure counts them.
  int64_t cpu_millis_per_unit = 0;
  int64_t memory_mib_per_unit = 0;
};

/// Host CPU and memory a job takes on each of its nodes. A zero field means the job's
/// share of the node in proportion to the GPU compute units it takes there, which is what
/// the worker gives a job that asks for nothing.
struct HostDemand {
  int64_t cpu_millis = 0;
  int64_t memory_mib = 0;
  bool operator==(const HostDemand& o) const { return cpu_millis == o.cpu_millis && memory_mib == o.memory_mib; }
};

class CapacityIndex {
 public:
  explicit CapacityIndex(PackPolicy policy = PackPolicy::kFragmentationAware);

  PackPolicy policy() const { return policy_; }

  /// Adds a pool for `model` (must have a MaskTable). Returns its id.
  int AddPool(const GpuModel* model);
  /// Adds a node of `num_gpus` GPUs to `pool`. fabric < 0 = none (no gangs). GPUs start
  /// not usable and empty. Returns the node id; its GPUs are NodeFirstGpu(node) + i.
  int AddNode(int pool, int fabric, int num_gpus);
  /// Makes room for this many nodes and GPUs in all (a bulk load).
  void Reserve(size_t nodes, size_t gpus) {
    nodes_.reserve(nodes);
    gpus_.reserve(gpus);
  }
  /// Takes every GPU of the node out of the index for good.
  void RemoveNode(int node);
  /// The node's host CPU and memory. 0 = unknown: that resource does not limit placements.
  void SetNodeHost(int node, int64_t cpu_millis, int64_t memory_mib);
  /// Adds (sign +1) or releases (-1) a charge HostCharge resolved: release what was added.
  void AddHostUse(int node, const HostDemand& charge, int sign);
  /// CPU and memory `demand` takes on the node for `units` compute units (zero fields
  /// resolved to the proportional share).
  HostDemand HostCharge(int node, const HostDemand& demand, int units) const;
  /// Whether the node has the CPU and memory left for `demand` on `units` compute units.
  bool HostFits(int node, const HostDemand& demand, int units) const { return HostFitsWith(node, demand, units, {}); }
  /// The same once `released` (charges that will come back) is free again.
  bool HostFitsWith(int node, const HostDemand& demand, int units, const HostDemand& released) const;
  /// What the node's jobs hold of its host now.
  HostDemand HostUsed(int node) const { return HostDemand{nodes_[node].cpu_used, nodes_[node].mem_used}; }
  int64_t NodeCpuTotal(int node) const { return nodes_[node].cpu_total; }
  int64_t NodeMemoryTotal(int node) const { return nodes_[node].mem_total; }
  int64_t NodeCpuFree(int node) const { return nodes_[node].cpu_total - nodes_[node].cpu_used; }
  int64_t NodeMemoryFree(int node) const { return nodes_[node].mem_total - nodes_[node].mem_used; }

  int pool_count() const { return static_cast<int>(pools_.size()); }
  int node_count() const { return static_cast<int>(nodes_.size()); }
  const GpuModel& Model(int pool) const { return *pools_[pool].table->model; }
  const MaskTable& Table(int pool) const { return *pools_[pool].table; }
  int NodePool(int node) const { return nodes_[node].pool; }
  int NodeFabric(int node) const { return nodes_[node].fabric; }
  int NodeFirstGpu(int node) const { return nodes_[node].first_gpu; }
  int NodeGpuCount(int node) const { return nodes_[node].num_gpus; }
  int FullFreeGpus(int node) const { return nodes_[node].fw; }
  int GpuNode(int gpu) const { return gpus_[gpu].node; }
  /// Most GPUs on any live node of the pool.
  int MaxNodeGpus(int pool) const { return pools_[pool].max_gpus; }
  /// Number of usable GPUs in the pool.
  int64_t UsableGpus(int pool) const { return pools_[pool].usable_gpus; }

  // --- GPU state -------------------------------------------------------------------------
  void SetUsable(int gpu, bool usable);
  void SetReserved(int gpu, bool reserved);
  void SetUsed(int gpu, uint8_t used);
  void SetHeld(int gpu, uint8_t held);
  /// Fixes the GPU's geometry (a GPU in MIG mode): only the listed (profile, start)
  /// instances are offered, and never the GPU whole. Instances must not overlap.
  void SetFixedSlices(int gpu, std::vector<std::pair<int, int>> instances);
  bool Fixed(int gpu) const { return gpus_[gpu].fixed; }
  /// The (profile, start) instances of a fixed GPU, as given to SetFixedSlices.
  const std::vector<std::pair<int, int>>& FixedSlices(int gpu) const { return gpus_[gpu].instances; }
  /// Whether a slice of `profile` at `start` may be placed on the GPU at all (always, unless
  /// its geometry is fixed and that is not one of its instances).
  bool Allows(int gpu, int profile, int start) const;
  bool Usable(int gpu) const { return gpus_[gpu].usable; }
  bool Reserved(int gpu) const { return gpus_[gpu].reserved; }
  uint8_t Used(int gpu) const { return gpus_[gpu].used; }
  uint8_t Held(int gpu) const { return gpus_[gpu].held; }
  /// Slots offered now (0 when not usable or reserved).
  uint8_t FreeMask(int gpu) const { return gpus_[gpu].key; }

  /// Sets the workload shape distribution the fragmentation measure uses for a pool.
  void SetShapeWeights(int pool, const ShapeWeights& weights);
  /// Re-weighs, from the pool's free capacity now, how likely a fragment that one big slice
  /// (more than half a GPU, e.g. 4g of 7 units) fits is to be filled by one (see
  /// Recompute). Picks use the figures of the last call: the caller calls it between
  /// batches of picks (the scheduler once a round), so a batch depends only on the state
  /// it started from.
  void Refresh(int pool);

  // --- Picks (no mutation) ---------------------------------------------------------------
  struct SlicePick {
    int gpu = -1;
    int start = 0;
  };
  // Every pick honours the host demand: a node without the CPU or memory left is passed by.
  std::optional<SlicePick> PickSlice(int pool, int profile, const HostDemand& host = {}) const;
  /// A node of the pool with at least `gpus` fully free GPUs.
  std::optional<int> PickNode(int pool, int gpus, const HostDemand& host = {}) const;
  /// `nodes` distinct nodes of one fabric, each with >= gpus_per_node fully free GPUs.
  bool PickGang(int pool, int nodes, int gpus_per_node, std::vector<int>* out,
                const HostDemand& host = {}) const;
  /// Appends every node of the pool on `fabric` (-1: any) with >= min_fw fully free GPUs.
  void NodesWithFullFree(int pool, int fabric, int min_fw, std::vector<int>* out) const;
  /// The lowest-indexed `n` fully free GPUs of `node` (it must have them).
  std::vector<int> TakeFullFreeGpus(int node, int n) const;

  /// Expected unusable capacity of a pool (sum over nodes) under its weights, in
  /// weight x compute-unit units. For tests and reports; O(GPUs).
  int64_t Fragmentation(int pool) const;

 private:
  static constexpr int64_t kUnlimited = std::numeric_limits<int64_t>::max();
  /// A node's free host resources as HostMax files them: free CPU and memory, and the most
  /// compute units a job asking for nothing (the GPU share) could take on each (kUnlimited
  /// where the node's size is unknown).
  struct HostKey {
    int64_t cpu = kUnlimited, memory = kUnlimited, cpu_units = kUnlimited, memory_units = kUnlimited;
    bool operator==(const HostKey& o) const {
      return cpu == o.cpu && memory == o.memory && cpu_units == o.cpu_units && memory_units == o.memory_units;
    }
  };
  static constexpr HostKey kNoHost{-1, -1, -1, -1};  // a node not in host_all
  struct Gpu {
    int node = -1;
    uint8_t used = 0;
    uint8_t held = 0;
    uint8_t key = 0;  // indexed free mask
    bool usable = false;
    bool reserved = false;
    bool fixed = false;
    uint8_t fixed_free = 0;                      // free slots last indexed (fixed GPUs)
    std::vector<std::pair<int, int>> instances;  // (profile, start) of a fixed GPU
  };
  struct Node {
    int pool = -1;
    int fabric = -1;
    int first_gpu = 0;
    int num_gpus = 0;
    int fw = 0;  // fully free offered GPUs
    bool live = true;
    int free_units = 0;  // compute units of the offered free masks
    int64_t cpu_total = 0, cpu_used = 0;  // host CPU, millicores (total 0 = unknown)
    int64_t mem_total = 0, mem_used = 0;  // host memory, MiB
    // How the node is filed in its pool's host_all (at slot host_slot), and whether it is.
    HostKey key;
    int host_slot = -1;
    bool in_host_all = false;
    int64_t strand = 0;  // Strand(pool, node, 0, {}), kept by IndexHost and Restrand
    int64_t order = 0;  // the key of the node's and its GPUs' Entries
  };
  HostKey KeyOf(const Node& n) const;
  /// The largest free amounts among a set of nodes: a tree of element-wise maxima over
  /// one slot per node (an absent node's slot holds kNoHost), updated in O(log nodes).
  class HostMax {
   public:
    void Set(int slot, const HostKey& key);
    /// False when no member can take `host` for `units` compute units.
    bool MayFit(const HostDemand& host, int units) const {
      if (tree_.empty()) return false;
      const HostKey& top = tree_[1];
      return (host.cpu_millis > 0 ? top.cpu >= host.cpu_millis : top.cpu_units >= units) &&
             (host.memory_mib > 0 ? top.memory >= host.memory_mib : top.memory_units >= units);
    }

   private:
    size_t leaves_ = 0;          // a power of two; leaf i is tree_[leaves_ + i]
    std::vector<HostKey> tree_;  // [1] is the root
  };
  /// A bucket or free-node set member: an order key and a GPU or node id, packed as
  /// order << 32 | id so that members sort by order, then id. Under kFragmentationAware
  /// the order is the class (OrderClass: spent, under a GPU, under eight, more) of the
  /// GPU-share units the node's free host can still feed, the smaller of HostKey's
  /// cpu_units and memory_units. A walk for a demand starts at the first class that may
  /// have room for it (OrderBound), so nodes whose CPU or memory is spent are never
  /// visited. The baselines order everything 0 and keep id order, as their definitions ask.
  using Entry = int64_t;
  using EntrySet = std::set<Entry>;
  static Entry MakeEntry(int64_t order, int id) { return order << 32 | static_cast<uint32_t>(id); }
  static int EntryId(Entry e) { return static_cast<int>(e & 0xFFFFFFFF); }
  struct Candidate {
    int64_t delta = 0;  // fragmentation growth (kFragmentationAware) or sort rank
    uint8_t mask = 0;   // free mask before
    uint8_t start = 0;
  };
  struct Pool {
    const MaskTable* table = nullptr;
    std::array<EntrySet, 256> buckets;
    std::vector<EntrySet> fw_nodes;                // by fw; [0] unused
    std::map<int, std::vector<EntrySet>> fabrics;  // fabric -> by fw
    int max_gpus = 0;
    int64_t usable_gpus = 0;
    std::array<int64_t, 256> a{};  // per-GPU fragmentation term by free mask
    std::vector<int64_t> b;        // node term by fully free GPU count
    std::vector<std::vector<Candidate>> candidates;  // per profile, best first
    // The same with only the first (best) start of each free mask: a later start on the
    // same GPUs never scores better, so the ranked picks need no other.
    std::vector<std::vector<Candidate>> mask_candidates;
    std::vector<std::set<std::pair<int, int>>> fixed_free;  // per profile: (gpu, start)
    ShapeWeights weights;
    int64_t total_weight = 0;  // sum of the weights (scale of the strand term)
    int64_t weighted_units = 0;  // sum over shapes of weight x compute units
    int64_t multi_gpu_units = 0;  // the part of it from shapes of N > 1 GPUs on one node
    int64_t free_units = 0;      // offered free compute units of the pool's GPUs
    // Index N: whole N-GPU slots on the pool's nodes, the sum of floor(fw / N).
    std::vector<int64_t> whole_slots;
    // Per profile: the share, in 1/kCreditScale, of the loss a big slice of that profile
    // would remove from a fragment it fits that is forgiven, because one is expected to
    // fill it (Refresh).
    std::vector<int64_t> exact_credit;
    // Index N: the share, in 1/kCreditScale, of its popularity that the measure gives the
    // shape of N GPUs on one node: below one while its whole slots outnumber the N-GPU
    // jobs expected in the rest of the fill (Refresh).
    std::vector<int64_t> whole_value;
    bool host_limited = false;  // some node of the pool has a known host size
    // Kept once host_limited: the live nodes with free GPU capacity (a demand none of them
    // can take fails at once).
    HostMax host_all;
    int host_slots = 0;  // host_all slots handed out, one per node of the pool
    // The largest host sizes and the fewest GPUs of any node the pool has had (OrderBound).
    int64_t max_cpu_total = 0, max_memory_total = 0;
    int min_gpus = std::numeric_limits<int>::max();
  };

  void Reindex(int gpu);
  void SetNodeFw(int node, int fw);
  void EnsureFwSize(Pool& pool, int n);
  /// Recomputes the fragmentation terms and candidate orders from the stored weights.
  void Recompute(int pool);
  /// Growth of the node term when a node with fw fully free GPUs gives `take` of them,
  /// plus the reserve penalty for breaking whole N-GPU slots that the expected N-GPU
  /// demand still needs.
  int64_t NodeDelta(const Pool& pool, int fw, int take) const;
  /// The exact-fit credits Refresh would set now.
  std::vector<int64_t> ExactFitCredits(const Pool& pool) const;
  std::vector<int64_t> WholeSlotValues(const Pool& pool) const;
  std::optional<int> BestFullFreeNode(const Pool& pool, const std::vector<EntrySet>& fw_nodes,
                                      int take, int units, int64_t* delta, const HostDemand& host) const;
  /// Units of the node's free GPU capacity its free CPU and memory cannot feed at the
  /// workload's rate, after it takes `units` more units with `charge` (weighted).
  int64_t Strand(const Pool& pool, const Node& n, int units, const HostDemand& charge) const;
  /// Growth of the stranded capacity if the node takes `units` units for `host`.
  int64_t StrandDelta(const Pool& pool, int node, int units, const HostDemand& host) const;
  /// Recomputes every node's kept stranding after the pool's weights changed.
  void Restrand(int pool);
  /// Re-files the node in its pool's host_all after its free CPU, memory or GPU capacity
  /// changed.
  void IndexHost(int node);
  /// The Entry key of the node under the policy.
  int64_t OrderOf(const Node& n) const;
  /// Moves the node's and its GPUs' Entries to the node's current order key.
  void Refile(int node);
  /// The least order key a node must have to take `host` on `units` units: a walk starts
  /// there and skips no member that fits.
  int64_t OrderBound(const Pool& pool, const HostDemand& host, int units) const;
  static EntrySet::const_iterator From(const EntrySet& set, int64_t bound) {
    if (set.empty() || *set.begin() >= MakeEntry(bound, 0)) return set.begin();  // the usual case
    return set.lower_bound(MakeEntry(bound, 0));
  }
  /// Files every node of the pool in host_all (when the pool becomes host limited).
  void FileHostAll(int pool);
  /// False when no node of the pool has the CPU or memory left for `host` on `units` units.
  bool HostPossible(const Pool& pool, const HostDemand& host, int units) const;
  bool HostModelled(const Pool& pool) const {
    return pool.weights.cpu_millis_per_unit > 0 || pool.weights.memory_mib_per_unit > 0;
  }

  PackPolicy policy_;
  std::vector<Pool> pools_;
  std::vector<Node> nodes_;
  std::vector<Gpu> gpus_;
};

}  // namespace surplus::scheduler
