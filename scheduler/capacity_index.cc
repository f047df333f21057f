#include "scheduler/capacity_index.h"

#include <algorithm>
#include <cassert>
#include <limits>
#include <tuple>

#include "surplus/host_resources.h"
#include "surplus/money.h"

namespace surplus::scheduler {
namespace {

constexpr uint8_t kFull = 0xFF;
constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
// With host resources modelled, a pick weighs the stranding of each candidate node; it
// examines at most this many fitting candidates per free-mask class, best first.
constexpr int kHostScan = 16;
// Exact-fit credits and whole-slot values are kept in these parts of one.
constexpr int64_t kCreditScale = 1024;
// The least share of its popularity a whole N-GPU slot keeps however many there are:
// slots are not interchangeable (a node's CPU and memory, its fabric), so their count
// overstates what the N-GPU jobs can use. Measured on the trace's lists (pack bench):
// from 96/1024 to 256/1024 every list gives the same figures; at 80/1024 gpushare40 loses
// 1.6 points, at 64/1024 the default list's host-heavy 8-GPU pod loses the few nodes it
// fits (first failure at 84 %); at 384/1024 multigpu30 gives 0.4 points of its gain back,
// at 512/1024 all of it.
constexpr int64_t kMinWholeValue = kCreditScale / 5;
// Whole-slot values move in steps of this, so the tables are not rebuilt every round.
constexpr int64_t kWholeValueStep = kCreditScale / 32;

// The order classes of share units: spent (cannot feed one unit), less than one GPU's
// share, less than eight GPUs', more. Monotone, so a bound's class bounds too. Coarse on
// purpose: a node changes class a few times as it fills, and within a class the walk keeps
// id order, which packs as well as before the classes (finer classes, e.g. powers of two,
// cost 1.3 points of packing quality on one trace list and bought no speed).
int64_t OrderClass(int64_t units) {
  if (units <= 0) return 0;
  if (units < kComputeUnitsPerGpu) return 1;
  return units < 8 * kComputeUnitsPerGpu ? 2 : 3;
}

// A slice of more than half a GPU: no two share one.
bool BigSlice(const SliceProfile& p) { return !p.IsWholeGpu() && 2 * p.compute_units > kComputeUnitsPerGpu; }

// Free mask `mask` is a fragment that one slice of the big profile fills exactly.
bool ExactFit(const MaskTable& t, size_t profile, int mask) {
  return t.capacity[mask] == t.model->profiles[profile].compute_units && t.fit_count[profile][mask] >= 1;
}

// The free mask left when one slice of the big profile takes partly used free mask `mask`,
// if it fits there and leaves at most one compute unit beside it (slots 0-3 free, and
// perhaps a one-unit slot pair: a 4g fills it all but that unit); -1 otherwise.
int BigSliceRemainder(const MaskTable& t, size_t profile, int mask) {
  if (t.capacity[mask] >= kComputeUnitsPerGpu) return -1;
  for (int start : t.model->profiles[profile].starts) {
    const int m = t.model->profiles[profile].MaskAt(start);
    if ((mask & m) == m && t.capacity[mask & ~m] <= 1) return mask & ~m;
  }
  return -1;
}

}  // namespace

CapacityIndex::CapacityIndex(PackPolicy policy) : policy_(policy) {}

int CapacityIndex::AddPool(const GpuModel* model) {
  Pool pool;
  pool.table = MaskTableFor(model);
  assert(pool.table != nullptr);
  pool.fw_nodes.resize(1);
  pool.b.assign(1, 0);
  pool.fixed_free.resize(model->profiles.size());
  pools_.push_back(std::move(pool));
  const int id = static_cast<int>(pools_.size()) - 1;
  SetShapeWeights(id, ShapeWeights{});
  return id;
}

void CapacityIndex::EnsureFwSize(Pool& pool, int n) {
  if (static_cast<int>(pool.fw_nodes.size()) < n + 1) pool.fw_nodes.resize(n + 1);
  if (static_cast<int>(pool.whole_slots.size()) < n + 1) pool.whole_slots.resize(n + 1, 0);
  for (auto& [fabric, sets] : pool.fabrics) {
    if (static_cast<int>(sets.size()) < n + 1) sets.resize(n + 1);
  }
}

int CapacityIndex::AddNode(int pool, int fabric, int num_gpus) {
  Node node;
  node.pool = pool;
  node.fabric = fabric;
  node.first_gpu = static_cast<int>(gpus_.size());
  node.num_gpus = num_gpus;
  node.order = OrderOf(node);
  node.host_slot = pools_[pool].host_slots++;
  nodes_.push_back(node);
  const int id = static_cast<int>(nodes_.size()) - 1;
  for (int i = 0; i < num_gpus; ++i) {
    Gpu g;
    g.node = id;
    gpus_.push_back(g);
  }
  Pool& p = pools_[pool];
  if (fabric >= 0 && p.fabrics.find(fabric) == p.fabrics.end()) {
    p.fabrics[fabric].resize(p.fw_nodes.size());
  }
  p.min_gpus = std::max(1, std::min(p.min_gpus, num_gpus));
  if (num_gpus > p.max_gpus) {
    p.max_gpus = num_gpus;
    EnsureFwSize(p, num_gpus);
    Recompute(pool);  // the node term covers fw up to the largest node
  }
  return id;
}

void CapacityIndex::RemoveNode(int node) {
  Node& n = nodes_[node];
  if (!n.live) return;
  for (int i = 0; i < n.num_gpus; ++i) SetUsable(n.first_gpu + i, false);
  n.live = false;
  IndexHost(node);
}

void CapacityIndex::SetNodeHost(int node, int64_t cpu_millis, int64_t memory_mib) {
  Node& n = nodes_[node];
  n.cpu_total = std::max<int64_t>(0, cpu_millis);
  n.mem_total = std::max<int64_t>(0, memory_mib);
  Pool& pool = pools_[n.pool];
  pool.max_cpu_total = std::max(pool.max_cpu_total, n.cpu_total);
  pool.max_memory_total = std::max(pool.max_memory_total, n.mem_total);
  if (!pool.host_limited && (n.cpu_total > 0 || n.mem_total > 0)) {
    FileHostAll(n.pool);
  } else {
    IndexHost(node);
  }
}

CapacityIndex::HostKey CapacityIndex::KeyOf(const Node& n) const {
  HostKey k;
  const int64_t node_units = int64_t{kComputeUnitsPerGpu} * std::max(1, n.num_gpus);
  // The largest u with total * u / node_units (rounded down, as HostCharge) <= free.
  auto share_units = [&](int64_t total, int64_t free) {
    return free < 0 ? int64_t{-1} : ((free + 1) * node_units - 1) / total;
  };
  if (n.cpu_total > 0) {
    k.cpu = n.cpu_total - n.cpu_used;
    k.cpu_units = share_units(n.cpu_total, k.cpu);
  }
  if (n.mem_total > 0) {
    k.memory = n.mem_total - n.mem_used;
    k.memory_units = share_units(n.mem_total, k.memory);
  }
  return k;
}

void CapacityIndex::FileHostAll(int pool_id) {
  Pool& pool = pools_[pool_id];
  pool.host_limited = true;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& n = nodes_[i];
    if (n.pool != pool_id) continue;
    n.key = KeyOf(n);
    n.strand = Strand(pool, n, 0, HostDemand{});
    n.in_host_all = n.live && n.free_units > 0;
    pool.host_all.Set(n.host_slot, n.in_host_all ? n.key : kNoHost);
    Refile(static_cast<int>(i));
  }
}

void CapacityIndex::HostMax::Set(int slot, const HostKey& key) {
  auto combine = [](const HostKey& a, const HostKey& b) {
    return HostKey{std::max(a.cpu, b.cpu), std::max(a.memory, b.memory), std::max(a.cpu_units, b.cpu_units),
                   std::max(a.memory_units, b.memory_units)};
  };
  const size_t leaf = static_cast<size_t>(slot);
  if (leaf >= leaves_) {  // grow: keep the leaves, rebuild the inner levels
    size_t leaves = std::max<size_t>(leaves_, 64);
    while (leaves <= leaf) leaves *= 2;
    std::vector<HostKey> tree(2 * leaves, kNoHost);
    for (size_t i = 0; i < leaves_; ++i) tree[leaves + i] = tree_[leaves_ + i];
    for (size_t i = leaves - 1; i >= 1; --i) tree[i] = combine(tree[2 * i], tree[2 * i + 1]);
    leaves_ = leaves;
    tree_ = std::move(tree);
  }
  size_t i = leaves_ + leaf;
  tree_[i] = key;
  for (i /= 2; i >= 1; i /= 2) tree_[i] = combine(tree_[2 * i], tree_[2 * i + 1]);
}

int64_t CapacityIndex::OrderOf(const Node& n) const {
  if (policy_ != PackPolicy::kFragmentationAware) return 0;
  return OrderClass(std::min(n.key.cpu_units, n.key.memory_units));
}

void CapacityIndex::Refile(int node) {
  Node& n = nodes_[node];
  const int64_t order = OrderOf(n);
  if (order == n.order) return;
  Pool& pool = pools_[n.pool];
  auto move = [&](EntrySet& set, int id) {  // reuses the set's node: no allocation
    auto handle = set.extract(MakeEntry(n.order, id));
    handle.value() = MakeEntry(order, id);
    set.insert(std::move(handle));
  };
  for (int i = 0; i < n.num_gpus; ++i) {
    const Gpu& g = gpus_[n.first_gpu + i];
    if (g.key != 0) move(pool.buckets[g.key], n.first_gpu + i);
  }
  if (n.fw > 0) {
    move(pool.fw_nodes[n.fw], node);
    if (n.fabric >= 0) move(pool.fabrics[n.fabric][n.fw], node);
  }
  n.order = order;
}

int64_t CapacityIndex::OrderBound(const Pool& pool, const HostDemand& host, int units) const {
  if (policy_ != PackPolicy::kFragmentationAware) return 0;
  // A node that fits a GPU-share demand of `units` has at least that many units of the
  // resource. One that fits an explicit `amount` has at least the share units that amount
  // makes on the largest node with the fewest GPUs. The order key is the smaller of the two
  // resources' share units, so it is at least the smaller bound.
  const int64_t min_node_units = int64_t{kComputeUnitsPerGpu} * pool.min_gpus;
  auto bound = [&](int64_t amount, int64_t max_total) {
    if (max_total == 0) return kUnlimited;  // no node limits the resource
    return amount > 0 ? amount * min_node_units / max_total : int64_t{units};
  };
  return OrderClass(std::min(bound(host.cpu_millis, pool.max_cpu_total), bound(host.memory_mib, pool.max_memory_total)));
}

void CapacityIndex::IndexHost(int node) {
  Node& n = nodes_[node];
  Pool& pool = pools_[n.pool];
  if (!pool.host_limited) return;
  n.strand = Strand(pool, n, 0, HostDemand{});
  const HostKey key = KeyOf(n);
  const bool want = n.live && n.free_units > 0;
  if (key == n.key && want == n.in_host_all) return;
  pool.host_all.Set(n.host_slot, want ? key : kNoHost);
  n.in_host_all = want;
  if (!(key == n.key)) {
    n.key = key;
    Refile(node);
  }
}

bool CapacityIndex::HostPossible(const Pool& pool, const HostDemand& host, int units) const {
  return !pool.host_limited || pool.host_all.MayFit(host, units);
}

HostDemand CapacityIndex::HostCharge(int node, const HostDemand& demand, int units) const {
  const Node& n = nodes_[node];
  return HostDemand{::surplus::HostCharge(demand.cpu_millis, n.cpu_total, units, n.num_gpus),
                    ::surplus::HostCharge(demand.memory_mib, n.mem_total, units, n.num_gpus)};
}

bool CapacityIndex::HostFitsWith(int node, const HostDemand& demand, int units, const HostDemand& released) const {
  const Node& n = nodes_[node];
  if (n.cpu_total == 0 && n.mem_total == 0) return true;
  const HostDemand c = HostCharge(node, demand, units);
  return (n.cpu_total == 0 || n.cpu_used - released.cpu_millis + c.cpu_millis <= n.cpu_total) &&
         (n.mem_total == 0 || n.mem_used - released.memory_mib + c.memory_mib <= n.mem_total);
}

void CapacityIndex::AddHostUse(int node, const HostDemand& charge, int sign) {
  nodes_[node].cpu_used += sign * charge.cpu_millis;
  nodes_[node].mem_used += sign * charge.memory_mib;
  IndexHost(node);
}

int64_t CapacityIndex::Strand(const Pool& pool, const Node& n, int units, const HostDemand& charge) const {
  const int64_t free_units = n.free_units - units;
  int64_t stranded = 0;
  if (pool.weights.cpu_millis_per_unit > 0 && n.cpu_total > 0) {
    const int64_t fed = std::max<int64_t>(0, n.cpu_total - n.cpu_used - charge.cpu_millis) /
                        pool.weights.cpu_millis_per_unit;
    stranded = std::max(stranded, free_units - fed);
  }
  if (pool.weights.memory_mib_per_unit > 0 && n.mem_total > 0) {
    const int64_t fed = std::max<int64_t>(0, n.mem_total - n.mem_used - charge.memory_mib) /
                        pool.weights.memory_mib_per_unit;
    stranded = std::max(stranded, free_units - fed);
  }
  return std::max<int64_t>(0, stranded) * pool.total_weight;
}

int64_t CapacityIndex::StrandDelta(const Pool& pool, int node, int units, const HostDemand& host) const {
  const Node& n = nodes_[node];
  return Strand(pool, n, units, HostCharge(node, host, units)) - n.strand;
}

void CapacityIndex::Restrand(int pool_id) {
  for (Node& n : nodes_) {
    if (n.pool == pool_id) n.strand = Strand(pools_[pool_id], n, 0, HostDemand{});
  }
}

void CapacityIndex::SetUsable(int gpu, bool usable) {
  Gpu& g = gpus_[gpu];
  if (g.usable == usable) return;
  if (!nodes_[g.node].live) return;
  g.usable = usable;
  pools_[nodes_[g.node].pool].usable_gpus += usable ? 1 : -1;
  Reindex(gpu);
}

void CapacityIndex::SetReserved(int gpu, bool reserved) {
  gpus_[gpu].reserved = reserved;
  Reindex(gpu);
}

void CapacityIndex::SetUsed(int gpu, uint8_t used) {
  gpus_[gpu].used = used;
  Reindex(gpu);
}

void CapacityIndex::SetHeld(int gpu, uint8_t held) {
  gpus_[gpu].held = held;
  Reindex(gpu);
}

void CapacityIndex::SetFixedSlices(int gpu, std::vector<std::pair<int, int>> instances) {
  Gpu& g = gpus_[gpu];
  const bool was_usable = g.usable;
  SetUsable(gpu, false);  // out of every bucket and set
  g.fixed = true;
  g.instances = std::move(instances);
  g.fixed_free = 0;
  SetUsable(gpu, was_usable);
}

bool CapacityIndex::Allows(int gpu, int profile, int start) const {
  const Gpu& g = gpus_[gpu];
  if (!g.fixed) return true;
  return std::find(g.instances.begin(), g.instances.end(), std::make_pair(profile, start)) !=
         g.instances.end();
}

void CapacityIndex::Reindex(int gpu) {
  Gpu& g = gpus_[gpu];
  if (g.fixed) {
    const uint8_t free =
        (g.usable && !g.reserved) ? static_cast<uint8_t>(~(g.used | g.held)) : uint8_t{0};
    if (free == g.fixed_free) return;
    Pool& pool = pools_[nodes_[g.node].pool];
    const GpuModel& model = *pool.table->model;
    for (const auto& [profile, start] : g.instances) {
      const uint8_t m = model.profiles[profile].MaskAt(start);
      const bool was = (g.fixed_free & m) == m, is = (free & m) == m;
      if (was && !is) pool.fixed_free[profile].erase({gpu, start});
      if (is && !was) pool.fixed_free[profile].insert({gpu, start});
      nodes_[g.node].free_units += (is - was) * model.profiles[profile].compute_units;
      pool.free_units += (is - was) * model.profiles[profile].compute_units;
    }
    g.fixed_free = free;
    IndexHost(g.node);
    return;
  }
  const uint8_t key = (g.usable && !g.reserved) ? static_cast<uint8_t>(~(g.used | g.held)) : 0;
  if (key == g.key) return;
  const int node = g.node;
  Pool& pool = pools_[nodes_[node].pool];
  Node& n = nodes_[node];
  n.free_units += pool.table->capacity[key] - pool.table->capacity[g.key];
  pool.free_units += pool.table->capacity[key] - pool.table->capacity[g.key];
  IndexHost(node);
  const Entry entry = MakeEntry(n.order, gpu);
  if (g.key != 0 && key != 0) {  // from bucket to bucket, reusing the set node
    pool.buckets[key].insert(pool.buckets[g.key].extract(entry));
  } else if (g.key != 0) {
    pool.buckets[g.key].erase(entry);
  } else if (key != 0) {
    pool.buckets[key].insert(pool.buckets[key].end(), entry);  // loads come in order
  }
  const bool was_full = g.key == kFull;
  const bool is_full = key == kFull;
  g.key = key;
  if (was_full != is_full) SetNodeFw(node, nodes_[node].fw + (is_full ? 1 : -1));
}

void CapacityIndex::SetNodeFw(int node, int fw) {
  Node& n = nodes_[node];
  Pool& pool = pools_[n.pool];
  std::vector<EntrySet>* fabric_sets = nullptr;
  if (n.fabric >= 0) fabric_sets = &pool.fabrics[n.fabric];
  const Entry e = MakeEntry(n.order, node);
  // From set to set, the nodes of the sets are reused: no allocation.
  auto move = [&](std::vector<EntrySet>& sets) {
    if (n.fw > 0 && fw > 0) {
      sets[fw].insert(sets[n.fw].extract(e));
    } else if (n.fw > 0) {
      sets[n.fw].erase(e);
    } else if (fw > 0) {
      sets[fw].insert(sets[fw].end(), e);
    }
  };
  move(pool.fw_nodes);
  if (fabric_sets) move(*fabric_sets);
  for (size_t k = 1; k < pool.whole_slots.size(); ++k) {
    pool.whole_slots[k] += fw / static_cast<int>(k) - n.fw / static_cast<int>(k);
  }
  n.fw = fw;
}

// Fragmentation measure. For a GPU with free mask s and a slice shape p of popularity w_p,
// the capacity p cannot use is capacity[s] - units_p * fit_count_p[s]; whole-GPU shapes
// (N GPUs on one node) can use nothing of a partly used GPU and 7*N*floor(fw/N) units of a
// node with fw fully free GPUs. The expected unusable capacity of a node is therefore
//   F(node) = sum_gpu a[s_gpu] + b[fw]
//   a[s]  = sum_p w_p (capacity[s] - u_p fit_p[s]) + W_whole capacity[s]
//   b[fw] = - sum_N w_N 7 N floor(fw / N)
// which lets a placement's effect be priced from the GPU's mask and the node's fw alone.
// That measure weighs only the next arrival. Four refinements weigh the rest of the fill:
//  - Destroyed capacity. A placement can leave free units that no slice can use (a 3g at
//    slots 0-3 of a GPU whose slots 4-7 are taken leaves a compute unit without a memory
//    slot): capacity[s] - capacity[rest] - u_p > 0. Those units drop out of F, so the plain
//    measure rewards destroying them. They are charged as lost to every shape: the total
//    weight per unit.
//  - Fragments for big slices. A slice of more than half a GPU (4g) never shares a GPU
//    with another of its size. A fragment it fits, all but at most one unit (slots 0-3
//    free, perhaps with the one-unit slots 6-7), is as good as a whole GPU to it, and each
//    one it takes saves a whole GPU. So the loss such a fragment's big slice would remove
//    is forgiven in a proportion (exact_credit, set by Refresh): the big slices expected
//    in the rest of the fill (free units times their share of the workload's units),
//    against the exact fragments there are plus those the slices taking the rest beside
//    one (3g, 2g) may still open. A GPU held for a fragment keeps jobs that ask for
//    several GPUs on one node waiting while they are short of fully free GPUs, so the
//    proportion shrinks with their share of the workload's units times that shortage
//    (their expected demand in the rest of the fill against the fully free GPUs). The
//    saved GPU turns up wherever the big slice would have gone, not beside other free
//    GPUs, so the loss to multi-GPU jobs is never forgiven. The proportion falls as
//    unfilled fragments pile up: without that, the measure opens fresh GPUs for
//    fragments the workload will not fill.
//  - Abundant whole slots (whole_value, set by Refresh). Breaking a whole N-GPU slot
//    costs the N-GPU jobs nothing while more such slots are left than those jobs expected
//    in the rest of the fill. Charging it at the shape's full popularity made a 3g pair
//    up beside another 3g (destroying a unit and taking a 4g's fragment) rather than open
//    a GPU of a whole 8-GPU node early in the fill, when hundreds were left; the 4g slices
//    then opened GPUs of their own whose beside-units stayed empty, and the last 8-GPU
//    pod found no node. So the shape's weight in F is scaled by expected jobs / slots
//    (at most one, at least kMinWholeValue).
//  - A reserve for whole-node shapes, for when they run short: see NodeDelta.

std::vector<int64_t> CapacityIndex::ExactFitCredits(const Pool& pool) const {
  const MaskTable& t = *pool.table;
  std::vector<int64_t> credits(t.model->profiles.size(), 0);
  if (policy_ != PackPolicy::kFragmentationAware || pool.weighted_units <= 0) return credits;
  // A fragment held for a big slice keeps a GPU from jobs that need whole GPUs together on
  // one node until that slice comes. That costs them only while they are short of whole
  // GPUs: every credit shrinks with their share of the workload's units times the share of
  // the pool's fully free GPUs their expected demand in the rest of the fill would take.
  // `kept` is what is left of a credit, in 1/(weighted_units x kCreditScale).
  const Int128 whole_free = static_cast<Int128>(pool.whole_slots.size() > 1 ? pool.whole_slots[1] : 0) *
                            kComputeUnitsPerGpu * pool.weighted_units;
  const Int128 multi_demand = static_cast<Int128>(pool.free_units) * pool.multi_gpu_units * kCreditScale;
  const Int128 pressure = whole_free > 0 ? std::min<Int128>(kCreditScale, multi_demand / whole_free)
                                         : (pool.multi_gpu_units > 0 ? kCreditScale : 0);
  const Int128 kept = kCreditScale * static_cast<Int128>(pool.weighted_units) - pool.multi_gpu_units * pressure;
  for (size_t q = 0; q < credits.size() && q < pool.weights.slice.size(); ++q) {
    if (pool.weights.slice[q] <= 0 || !BigSlice(t.model->profiles[q])) continue;
    int64_t fragments = 0;
    for (int s = 1; s < 255; ++s) {
      if (ExactFit(t, q, s)) fragments += static_cast<int64_t>(pool.buckets[s].size());
    }
    // The slices that take the rest of a GPU beside q (3g and 2g beside 4g) may each open
    // such a fragment too.
    int64_t openers = 0;
    for (size_t o = 0; o < pool.weights.slice.size() && static_cast<int>(o) < t.whole_profile; ++o) {
      const int u = t.model->profiles[o].compute_units;
      if (u >= 2 && u <= kComputeUnitsPerGpu - t.model->profiles[q].compute_units) openers += pool.weights.slice[o];
    }
    // Slices of q expected in the rest of the fill, against the fragments there are, the
    // one a placement would make, and those the openers still to come may make.
    const Int128 expected = static_cast<Int128>(pool.free_units) * pool.weights.slice[q] * kCreditScale;
    const Int128 room = static_cast<Int128>(pool.weighted_units) * (fragments + 1) +
                        static_cast<Int128>(pool.free_units) * openers;
    credits[q] = static_cast<int64_t>(std::min<Int128>(kCreditScale, expected / room));
    credits[q] = static_cast<int64_t>(credits[q] * kept / (static_cast<Int128>(pool.weighted_units) * kCreditScale));
  }
  return credits;
}

std::vector<int64_t> CapacityIndex::WholeSlotValues(const Pool& pool) const {
  const std::vector<int64_t>& whole = pool.weights.whole;
  std::vector<int64_t> values(whole.size(), kCreditScale);
  if (policy_ != PackPolicy::kFragmentationAware || pool.weighted_units <= 0) return values;
  for (size_t n = 2; n < whole.size() && n < pool.whole_slots.size(); ++n) {
    if (whole[n] <= 0 || pool.whole_slots[n] <= 0) continue;
    // N-GPU jobs expected in the rest of the fill, against the whole N-GPU slots there are.
    const Int128 expected = static_cast<Int128>(pool.free_units) * whole[n] * kCreditScale;
    const Int128 slots = static_cast<Int128>(pool.whole_slots[n]) * pool.weighted_units;
    const int64_t value = static_cast<int64_t>(std::min<Int128>(kCreditScale, expected / slots));
    values[n] = std::max(kMinWholeValue, value / kWholeValueStep * kWholeValueStep);
  }
  return values;
}

void CapacityIndex::Refresh(int pool_id) {
  Pool& pool = pools_[pool_id];
  std::vector<int64_t> credits = ExactFitCredits(pool);
  std::vector<int64_t> values = WholeSlotValues(pool);
  if (credits == pool.exact_credit && values == pool.whole_value) return;
  pool.exact_credit = std::move(credits);
  pool.whole_value = std::move(values);
  Recompute(pool_id);
}

void CapacityIndex::SetShapeWeights(int pool_id, const ShapeWeights& weights) {
  Pool& pool = pools_[pool_id];
  pool.weights = weights;
  Recompute(pool_id);
  if (pool.host_limited) Restrand(pool_id);  // the rates and the total weight enter it
}

void CapacityIndex::Recompute(int pool_id) {
  Pool& pool = pools_[pool_id];
  const ShapeWeights& weights = pool.weights;
  const MaskTable& t = *pool.table;
  const GpuModel& model = *t.model;
  int64_t whole_total = 0;
  for (size_t n = 1; n < weights.whole.size(); ++n) whole_total += weights.whole[n];
  pool.total_weight = whole_total;
  // The whole shapes' weights as the measure sees them (WholeSlotValues); the strand term,
  // the destroyed-capacity charge, the credits and the reserve keep the plain ones.
  std::vector<int64_t> whole_w(weights.whole.size(), 0);
  int64_t whole_w_total = 0;
  for (size_t n = 1; n < weights.whole.size(); ++n) {
    const int64_t value = n < pool.whole_value.size() ? pool.whole_value[n] : kCreditScale;
    whole_w[n] = weights.whole[n] * value / kCreditScale;
    whole_w_total += whole_w[n];
  }
  pool.weighted_units = 0;
  pool.multi_gpu_units = 0;
  for (size_t n = 1; n < weights.whole.size(); ++n) {
    const int64_t units = weights.whole[n] * kComputeUnitsPerGpu * static_cast<int64_t>(n);
    pool.weighted_units += units;
    if (n >= 2) pool.multi_gpu_units += units;
  }
  for (size_t p = 0; p < weights.slice.size() && static_cast<int>(p) < t.whole_profile; ++p) {
    pool.total_weight += weights.slice[p];
    pool.weighted_units += weights.slice[p] * model.profiles[p].compute_units;
  }
  for (int s = 0; s < 256; ++s) {
    int64_t v = whole_w_total * t.capacity[s];
    for (size_t p = 0; p < weights.slice.size() && static_cast<int>(p) < t.whole_profile; ++p) {
      v += weights.slice[p] *
           (t.capacity[s] - int64_t{model.profiles[p].compute_units} * t.fit_count[p][s]);
    }
    pool.a[s] = v;
  }
  // Fragments a big slice fills (all but at most one unit): forgive the credited share of
  // the loss that slice would remove. The whole GPU it saves by filling one turns up
  // wherever it would have gone, not beside other free GPUs: it serves single-GPU jobs.
  // So the loss to jobs of N > 1 GPUs on one node is not forgiven.
  int64_t multi_gpu_weight = 0;
  for (size_t n = 2; n < weights.whole.size(); ++n) multi_gpu_weight += whole_w[n];
  const std::array<int64_t, 256> plain = pool.a;
  auto forgivable = [&](int s) { return plain[s] - multi_gpu_weight * t.capacity[s]; };
  for (size_t q = 0; q < pool.exact_credit.size(); ++q) {
    if (pool.exact_credit[q] <= 0) continue;
    for (int s = 1; s < 255; ++s) {
      const int rest = BigSliceRemainder(t, q, s);
      if (rest < 0) continue;
      const int64_t removed = forgivable(s) - forgivable(rest);
      if (removed > 0) pool.a[s] = std::min(pool.a[s], plain[s] - removed * pool.exact_credit[q] / kCreditScale);
    }
  }
  pool.b.assign(static_cast<size_t>(pool.max_gpus) + 1, 0);
  for (int fw = 0; fw <= pool.max_gpus; ++fw) {
    int64_t v = 0;
    for (size_t n = 1; n < weights.whole.size(); ++n) {
      v -= whole_w[n] * kComputeUnitsPerGpu * static_cast<int64_t>(n) * (fw / static_cast<int>(n));
    }
    pool.b[fw] = v;
  }
  pool.candidates.assign(model.profiles.size(), {});
  pool.mask_candidates.assign(model.profiles.size(), {});
  for (size_t p = 0; p < model.profiles.size(); ++p) {
    const SliceProfile& prof = model.profiles[p];
    std::vector<Candidate>& out = pool.candidates[p];
    for (int s = 1; s < 256; ++s) {
      for (int start : prof.starts) {
        const int m = prof.MaskAt(start);
        if ((m & s) != m) continue;
        const int rest = s & ~m;
        Candidate c;
        c.mask = static_cast<uint8_t>(s);
        c.start = static_cast<uint8_t>(start);
        if (policy_ == PackPolicy::kFragmentationAware) {
          const int destroyed = t.capacity[s] - t.capacity[rest] - prof.compute_units;
          c.delta = pool.a[rest] - pool.a[s] + pool.total_weight * destroyed;
        } else {
          // Best fit: least free capacity first, then the start that keeps most of it.
          c.delta = int64_t{t.capacity[s]} * 16 - t.capacity[rest];
        }
        out.push_back(c);
      }
    }
    std::sort(out.begin(), out.end(), [&](const Candidate& x, const Candidate& y) {
      // Ties: keep whole GPUs whole, then fill the fuller GPU (best fit), then fixed order.
      return std::make_tuple(x.delta, x.mask == kFull, t.capacity[x.mask], x.mask, x.start) <
             std::make_tuple(y.delta, y.mask == kFull, t.capacity[y.mask], y.mask, y.start);
    });
    std::array<bool, 256> seen{};
    for (const Candidate& c : out) {
      if (!seen[c.mask]) pool.mask_candidates[p].push_back(c);
      seen[c.mask] = true;
    }
  }
}

// The reserve for whole-node shapes. The node term prices a whole N-GPU slot at the
// shape's popularity, which is small for big shapes, so a few small jobs that strand less
// there break the last whole nodes long before the fleet fills, and the next N-GPU job
// finds none. While breaking one would leave fewer whole N-GPU slots than the N-GPU jobs
// expected in the rest of the fill (free units times the shape's share of the workload's
// units), breaking it is charged as its capacity lost to every shape: a placement
// elsewhere wins unless it strands or destroys more than that.
int64_t CapacityIndex::NodeDelta(const Pool& pool, int fw, int take) const {
  int64_t delta = pool.b[fw - take] - pool.b[fw];
  if (policy_ != PackPolicy::kFragmentationAware || pool.weighted_units <= 0) return delta;
  const std::vector<int64_t>& whole = pool.weights.whole;
  for (size_t n = static_cast<size_t>(take) + 1; n < whole.size() && n < pool.whole_slots.size(); ++n) {
    const int k = static_cast<int>(n);
    const int64_t lost = fw / k - (fw - take) / k;
    if (whole[n] <= 0 || lost <= 0) continue;
    const Int128 left = static_cast<Int128>(pool.whole_slots[n] - lost) * pool.weighted_units;
    if (left < static_cast<Int128>(pool.free_units) * whole[n]) {
      delta += lost * kComputeUnitsPerGpu * k * pool.total_weight;
    }
  }
  return delta;
}

std::optional<int> CapacityIndex::BestFullFreeNode(const Pool& pool,
                                                   const std::vector<EntrySet>& fw_nodes,
                                                   int take, int units, int64_t* delta,
                                                   const HostDemand& host) const {
  const bool weigh_host = policy_ == PackPolicy::kFragmentationAware && HostModelled(pool);
  std::optional<int> best;
  int64_t best_delta = kInf;
  const int64_t bound = OrderBound(pool, host, units);
  for (int fw = take; fw < static_cast<int>(fw_nodes.size()); ++fw) {
    if (fw_nodes[fw].empty()) continue;
    int examined = 0;
    const int64_t class_delta = policy_ == PackPolicy::kFragmentationAware ? NodeDelta(pool, fw, take) : 0;
    for (auto it = From(fw_nodes[fw], bound); it != fw_nodes[fw].end(); ++it) {
      const int node = EntryId(*it);
      if (pool.host_limited && !HostFits(node, host, units)) continue;
      switch (policy_) {
        case PackPolicy::kFragmentationAware: {
          const int64_t d = class_delta + (weigh_host ? StrandDelta(pool, node, units, host) : 0);
          if (d < best_delta) {  // ties keep the smaller fw: best fit
            best_delta = d;
            best = node;
          }
          break;
        }
        case PackPolicy::kBestFit:
          if (delta) *delta = 0;
          return node;
        case PackPolicy::kFirstFit:
          if (!best || node < *best) best = node;
          best_delta = 0;
          break;
      }
      if (!weigh_host || ++examined == kHostScan) break;  // the first fitting node stands for its class
    }
  }
  if (delta) *delta = best_delta;
  return best;
}

std::optional<CapacityIndex::SlicePick> CapacityIndex::PickSlice(int pool_id, int profile,
                                                                 const HostDemand& host) const {
  const Pool& pool = pools_[pool_id];
  const int units = pool.table->model->profiles[profile].compute_units;
  auto fits = [&](int gpu) { return !pool.host_limited || HostFits(gpus_[gpu].node, host, units); };
  if (!HostPossible(pool, host, units)) return std::nullopt;  // no node has that much left
  // A free MIG instance of the profile first: it can serve nothing else, and taking it
  // fragments nothing.
  for (const auto& [gpu, start] : pool.fixed_free[profile]) {
    if (fits(gpu)) return SlicePick{gpu, start};
  }
  std::optional<SlicePick> best;
  switch (policy_) {
    case PackPolicy::kFirstFit:
      for (const Candidate& c : pool.candidates[profile]) {
        for (const Entry e : pool.buckets[c.mask]) {
          const int gpu = EntryId(e);
          if (!fits(gpu)) continue;
          if (!best || std::make_pair(gpu, int{c.start}) < std::make_pair(best->gpu, best->start)) {
            best = SlicePick{gpu, c.start};
          }
          break;
        }
      }
      return best;
    case PackPolicy::kBestFit:
      // Candidates are ordered fullest GPU first: the first that exists wins.
      for (const Candidate& c : pool.mask_candidates[profile]) {
        if (c.mask == kFull) {
          const std::optional<int> node = BestFullFreeNode(pool, pool.fw_nodes, 1, units, nullptr, host);
          if (node) return SlicePick{TakeFullFreeGpus(*node, 1).front(), c.start};
          continue;
        }
        for (const Entry e : pool.buckets[c.mask]) {
          if (fits(EntryId(e))) return SlicePick{EntryId(e), c.start};
        }
      }
      return best;
    case PackPolicy::kFragmentationAware:
      break;
  }
  // Stranding can fall by at most the units taken; without host resources it is not weighed.
  const bool weigh_host = HostModelled(pool);
  const int64_t strand_floor = weigh_host ? -int64_t{units} * pool.total_weight : 0;
  int64_t best_score = kInf;
  const int64_t bound = OrderBound(pool, host, units);
  // The fully free GPU to take is the same for every start: looked up once.
  bool full_looked_up = false;
  std::optional<int> node;
  int64_t node_delta = 0;
  for (const Candidate& c : pool.mask_candidates[profile]) {
    // Every later candidate costs at least its own delta (node terms are >= 0).
    if (best && c.delta + strand_floor >= best_score) break;
    if (c.mask == kFull) {
      if (!full_looked_up) {
        node = BestFullFreeNode(pool, pool.fw_nodes, 1, units, &node_delta, host);
        full_looked_up = true;
      }
      if (!node) continue;
      const int64_t score = c.delta + node_delta;
      if (!best || score < best_score) {
        best_score = score;
        best = SlicePick{TakeFullFreeGpus(*node, 1).front(), c.start};
      }
      continue;
    }
    int examined = 0;
    const EntrySet& bucket = pool.buckets[c.mask];
    for (auto it = From(bucket, bound); it != bucket.end(); ++it) {
      const int gpu = EntryId(*it);
      if (!fits(gpu)) continue;
      const int64_t score = c.delta + (weigh_host ? StrandDelta(pool, gpus_[gpu].node, units, host) : 0);
      if (!best || score < best_score) {
        best_score = score;
        best = SlicePick{gpu, c.start};
      }
      if (!weigh_host || ++examined == kHostScan) break;
    }
  }
  return best;
}

std::optional<int> CapacityIndex::PickNode(int pool_id, int gpus, const HostDemand& host) const {
  const Pool& pool = pools_[pool_id];
  if (gpus <= 0 || gpus >= static_cast<int>(pool.fw_nodes.size())) return std::nullopt;
  if (!HostPossible(pool, host, gpus * kComputeUnitsPerGpu)) return std::nullopt;
  return BestFullFreeNode(pool, pool.fw_nodes, gpus, gpus * kComputeUnitsPerGpu, nullptr, host);
}

bool CapacityIndex::PickGang(int pool_id, int nodes, int gpus_per_node, std::vector<int>* out,
                             const HostDemand& host) const {
  out->clear();
  if (nodes == 1) {
    std::optional<int> node = PickNode(pool_id, gpus_per_node, host);
    if (node) out->push_back(*node);
    return node.has_value();
  }
  const Pool& pool = pools_[pool_id];
  if (gpus_per_node <= 0 || gpus_per_node >= static_cast<int>(pool.fw_nodes.size())) return false;
  const int units = gpus_per_node * kComputeUnitsPerGpu;
  auto fits = [&](int node) { return !pool.host_limited || HostFits(node, host, units); };
  if (!HostPossible(pool, host, units)) return false;
  const int64_t bound = OrderBound(pool, host, units);
  int64_t best_cost = kInf;
  std::vector<int> chosen;
  for (const auto& [fabric, sets] : pool.fabrics) {
    // Count first: most fabrics cannot host the gang at all.
    size_t available = 0;
    for (int fw = gpus_per_node; fw < static_cast<int>(sets.size()); ++fw) available += sets[fw].size();
    if (available < static_cast<size_t>(nodes)) continue;
    // Order fw classes by cost, take nodes from the cheapest classes.
    std::vector<std::pair<int64_t, int>> classes;
    for (int fw = gpus_per_node; fw < static_cast<int>(sets.size()); ++fw) {
      if (sets[fw].empty()) continue;
      int64_t cost = 0;
      if (policy_ == PackPolicy::kFragmentationAware) cost = NodeDelta(pool, fw, gpus_per_node);
      if (policy_ == PackPolicy::kBestFit) cost = fw;
      classes.push_back({cost, fw});
    }
    std::sort(classes.begin(), classes.end());
    std::vector<int> pick;
    int64_t cost = 0;
    if (policy_ == PackPolicy::kFirstFit) {
      for (const auto& cls : classes) {
        for (const Entry e : sets[cls.second]) {
          if (fits(EntryId(e))) pick.push_back(EntryId(e));
        }
      }
      if (pick.size() < static_cast<size_t>(nodes)) continue;
      std::sort(pick.begin(), pick.end());
      pick.resize(static_cast<size_t>(nodes));
      *out = std::move(pick);
      return true;
    }
    for (const auto& cls : classes) {
      const EntrySet& set = sets[cls.second];
      for (auto it = From(set, bound); it != set.end(); ++it) {
        const int n = EntryId(*it);
        if (static_cast<int>(pick.size()) == nodes) break;
        if (!fits(n)) continue;
        pick.push_back(n);
        cost += cls.first;
      }
    }
    if (pick.size() < static_cast<size_t>(nodes)) continue;
    if (cost < best_cost) {
      best_cost = cost;
      chosen = std::move(pick);
    }
  }
  if (chosen.empty()) return false;
  *out = std::move(chosen);
  return true;
}

void CapacityIndex::NodesWithFullFree(int pool_id, int fabric, int min_fw,
                                      std::vector<int>* out) const {
  const Pool& pool = pools_[pool_id];
  const std::vector<EntrySet>* sets = &pool.fw_nodes;
  if (fabric >= 0) {
    auto it = pool.fabrics.find(fabric);
    if (it == pool.fabrics.end()) return;
    sets = &it->second;
  }
  for (int fw = std::max(min_fw, 1); fw < static_cast<int>(sets->size()); ++fw) {
    for (const Entry e : (*sets)[fw]) out->push_back(EntryId(e));
  }
}

std::vector<int> CapacityIndex::TakeFullFreeGpus(int node, int n) const {
  std::vector<int> out;
  const Node& nd = nodes_[node];
  for (int i = 0; i < nd.num_gpus && static_cast<int>(out.size()) < n; ++i) {
    if (gpus_[nd.first_gpu + i].key == kFull) out.push_back(nd.first_gpu + i);
  }
  return out;
}

int64_t CapacityIndex::Fragmentation(int pool_id) const {
  const Pool& pool = pools_[pool_id];
  int64_t total = 0;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    if (!n.live || n.pool != pool_id) continue;
    for (int g = 0; g < n.num_gpus; ++g) total += pool.a[gpus_[n.first_gpu + g].key];
    total += pool.b[n.fw];
  }
  return total;
}

}  // namespace surplus::scheduler
