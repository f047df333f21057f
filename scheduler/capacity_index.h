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

#include <array>
#include <cstdint>
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
  /// tables and to node-level whole-GPU shapes, with best-fit tie breaks.
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
  /// Takes every GPU of the node out of the index for good.
  void RemoveNode(int node);

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

  // --- Picks (no mutation) ---------------------------------------------------------------
  struct SlicePick {
    int gpu = -1;
    int start = 0;
  };
  std::optional<SlicePick> PickSlice(int pool, int profile) const;
  /// A node of the pool with at least `gpus` fully free GPUs.
  std::optional<int> PickNode(int pool, int gpus) const;
  /// `nodes` distinct nodes of one fabric, each with >= gpus_per_node fully free GPUs.
  bool PickGang(int pool, int nodes, int gpus_per_node, std::vector<int>* out) const;
  /// Appends every node of the pool on `fabric` (-1: any) with >= min_fw fully free GPUs.
  void NodesWithFullFree(int pool, int fabric, int min_fw, std::vector<int>* out) const;
  /// The lowest-indexed `n` fully free GPUs of `node` (it must have them).
  std::vector<int> TakeFullFreeGpus(int node, int n) const;

  /// Expected unusable capacity of a pool (sum over nodes) under its weights, in
  /// weight x compute-unit units. For tests and reports; O(GPUs).
  int64_t Fragmentation(int pool) const;

 private:
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
  };
  struct Candidate {
    int64_t delta = 0;  // fragmentation growth (kFragmentationAware) or sort rank
    uint8_t mask = 0;   // free mask before
    uint8_t start = 0;
  };
  struct Pool {
    const MaskTable* table = nullptr;
    std::array<std::set<int>, 256> buckets;
    std::vector<std::set<int>> fw_nodes;                // by fw; [0] unused
    std::map<int, std::vector<std::set<int>>> fabrics;  // fabric -> by fw
    int max_gpus = 0;
    int64_t usable_gpus = 0;
    std::array<int64_t, 256> a{};  // per-GPU fragmentation term by free mask
    std::vector<int64_t> b;        // node term by fully free GPU count
    std::vector<std::vector<Candidate>> candidates;  // per profile, best first
    std::vector<std::set<std::pair<int, int>>> fixed_free;  // per profile: (gpu, start)
    ShapeWeights weights;
  };

  void Reindex(int gpu);
  void SetNodeFw(int node, int fw);
  void EnsureFwSize(Pool& pool, int n);
  /// Recomputes the fragmentation terms and candidate orders from the stored weights.
  void Recompute(int pool);
  int64_t NodeDelta(const Pool& pool, int fw, int take) const;
  std::optional<int> BestFullFreeNode(const Pool& pool, const std::vector<std::set<int>>& fw_nodes,
                                      int take, int64_t* delta) const;

  PackPolicy policy_;
  std::vector<Pool> pools_;
  std::vector<Node> nodes_;
  std::vector<Gpu> gpus_;
};

}  // namespace surplus::scheduler
