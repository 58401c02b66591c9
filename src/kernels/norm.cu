// The residual stream's memory-bound work (include/openvid/kernels/fused.h): the gated residual, the
// modulated RMSNorm, and both fused, forward and backward.
//
// Layout of every kernel here: a CUDA block owns a chunk of rows of one sample (rows_per_chunk(D): fewer for
// narrower rows, so that a narrow model still has enough blocks to fill the GPU) and spans a whole row, each
// thread V x 8 columns (16-byte accesses, V = 1 up to D = 4096, 2 up to 8192), so that the per-sample rows
// (shift, scale, gate, weight) stay at hand for the whole chunk, a row's reduction is one block reduction,
// and the column sums over the tokens (the gradients of shift, scale and gate) accumulate across the
// chunk's rows. Each block writes its column sums as partials
// [B, chunks, D]; a second kernel adds the chunks in order, so every result is deterministic.
// The rows of a chunk go one after the other (a row's norm is a block reduction, a barrier). The forward
// issues the next row's loads before working on the current one, so that their latency overlaps the barrier
// and the arithmetic; the backward does not (its extra registers spilled, and it ran 16% slower at D = 4096).
#include <cuda_bf16.h>

#include <algorithm>

#include "openvid/kernels/cuda_check.h"
#include "openvid/kernels/fused.h"
#include "vec.cuh"

namespace ov::kernels {
namespace {

using bf16 = __nv_bfloat16;
constexpr int64_t kMaxRowsPerChunk = 32;
constexpr int kMaxThreads = 512;
constexpr int kMaxWarps = kMaxThreads / 32;

__device__ __forceinline__ const bf16* as_bf16(const bf16_t* p) { return reinterpret_cast<const bf16*>(p); }
__device__ __forceinline__ bf16* as_bf16(bf16_t* p) { return reinterpret_cast<bf16*>(p); }
__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// 32 rows at D >= 4096 (512 threads), 16 at 2048, 8 at 1024 and below: the same rows x threads per block.
int64_t rows_per_chunk(int64_t D) { return std::max<int64_t>(8, std::min<int64_t>(kMaxRowsPerChunk, kMaxRowsPerChunk * D / 4096)); }
int64_t chunks_of(int64_t L, int64_t D) { return (L + rows_per_chunk(D) - 1) / rows_per_chunk(D); }
int vectors_per_thread(int64_t D) { return D <= kVec * kMaxThreads ? 1 : 2; }
int threads_for(int64_t D) {
  const int64_t per_thread = kVec * vectors_per_thread(D);
  return static_cast<int>(((D + per_thread - 1) / per_thread + 31) / 32 * 32);
}

// Sum of `v` over the block. `shared` holds one float per warp and is written by every call: callers
// alternate between two buffers so that consecutive calls need one barrier each.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  float s = 0.f;
  const int warps = static_cast<int>(blockDim.x / 32);
  for (int w = 0; w < warps; ++w) s += shared[w];
  return s;
}

// A thread's columns: vector j covers [col(j), col(j) + 8).
template <int V>
struct Columns {
  int64_t first;
  __device__ Columns() : first(static_cast<int64_t>(threadIdx.x) * kVec) {}
  __device__ int64_t col(int j) const { return first + static_cast<int64_t>(j) * blockDim.x * kVec; }
};

// A per-sample row vector's values at this thread's columns (zeros past the row, or `fill` for a null one).
template <int V>
__device__ __forceinline__ void load_row(const bf16_t* data, int64_t base, const Columns<V>& c, int64_t D, float fill,
                                         float (&v)[V][kVec]) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    if (data != nullptr && c.col(j) < D) {
      load8(as_bf16(data) + base + c.col(j), v[j]);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[j][i] = data == nullptr ? fill : 0.f;
    }
  }
}

// A junction's per-sample row vectors at this thread's columns: the gate, and the norm's gain (1 + scale) * weight.
template <int V>
__device__ __forceinline__ void load_gate_and_gain(RowVector gate, RowVector scale, const bf16_t* w_, int64_t b, const Columns<V>& c,
                                                   int64_t D, float (&gt)[V][kVec], float (&gain)[V][kVec]) {
  float sc[V][kVec], w[V][kVec];
  load_row<V>(gate.data, b * gate.batch_stride, c, D, 0.f, gt);
  load_row<V>(scale.data, b * scale.batch_stride, c, D, 0.f, sc);
  load_row<V>(w_, 0, c, D, 1.f, w);
#pragma unroll
  for (int j = 0; j < V; ++j) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) gain[j][i] = (1.f + sc[j][i]) * w[j][i];
  }
}

// Forward. Residual (y given): x_new = x + y * gate, written to x_out. Norm (h given): h = x_new * rstd * w *
// (1 + scale) + shift, rstd written per row.
template <int V>
__global__ void __launch_bounds__(kMaxThreads, V == 1 ? 2 : 1)
    forward_kernel(const bf16_t* __restrict__ x_, const bf16_t* __restrict__ y_, RowVector gate, bf16_t* __restrict__ x_out_,
                   const bf16_t* __restrict__ w_, RowVector shift, RowVector scale, bf16_t* __restrict__ h_, float* __restrict__ rstd,
                   int64_t L, int64_t D, float eps, int64_t rows) {
  __shared__ float shared[2][kMaxWarps];
  const int64_t b = blockIdx.y;
  const Columns<V> c;
  float gt[V][kVec], scw[V][kVec], sh[V][kVec];  // gate, (1 + scale) * weight, shift
  load_gate_and_gain<V>(gate, scale, w_, b, c, D, gt, scw);
  load_row<V>(shift.data, b * shift.batch_stride, c, D, 0.f, sh);
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * rows, end = min(L, begin + rows);
  Raw8 next_x[V], next_y[V];  // the next row's x and y, loaded one iteration ahead
  auto fetch = [&](int64_t l) {
    if (l >= end) return;
    const int64_t row = (b * L + l) * D;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (c.col(j) >= D) continue;
      next_x[j] = load_raw8(as_bf16(x_) + row + c.col(j));
      if (y_ != nullptr) next_y[j] = load_raw8(as_bf16(y_) + row + c.col(j));
    }
  };
  fetch(begin);
  int parity = 0;
  for (int64_t l = begin; l < end; ++l) {
    const int64_t row = (b * L + l) * D;
    float x[V][kVec];
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < V; ++j) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) x[j][i] = 0.f;
      if (c.col(j) >= D) continue;
      unpack8(next_x[j], x[j]);
      if (y_ != nullptr) {
        float y[kVec];
        unpack8(next_y[j], y);
#pragma unroll
        for (int i = 0; i < kVec; ++i) x[j][i] = round_bf16(x[j][i] + y[i] * gt[j][i]);  // the norm reads the stored bf16
      }
    }
    fetch(l + 1);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (c.col(j) < D && y_ != nullptr) store8(as_bf16(x_out_) + row + c.col(j), x[j]);
#pragma unroll
      for (int i = 0; i < kVec; ++i) ss += x[j][i] * x[j][i];
    }
    if (h_ == nullptr) continue;
    const float r = rsqrtf(block_sum(ss, shared[parity]) / static_cast<float>(D) + eps);
    parity ^= 1;
    if (threadIdx.x == 0) rstd[b * L + l] = r;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (c.col(j) >= D) continue;
#pragma unroll
      for (int i = 0; i < kVec; ++i) x[j][i] = x[j][i] * r * scw[j][i] + sh[j][i];
      store8(as_bf16(h_) + row + c.col(j), x[j]);
    }
  }
}

// Backward at one junction of the residual stream: x_new = x + y * gate (when y is given), h = norm(x_new)
// (when g_h is given). t = g_x (the gradient of x_new from downstream; 0 when null) + the norm's dx;
// dx = t is written (when dx is given), and dy = t * gate. Column partials: dshift = sum g_h,
// dscale_n = sum g_h * n (n = x_new * rstd, before the weight), dgate = sum t * y.
// Memory-bound and latency-bound: the column sums and the per-sample row vectors live in shared memory (laid
// out [slot][thread], conflict-free) rather than registers, so that two blocks fit on an SM at D <= 4096
// and one block's loads overlap the other's barrier; and every load of a row is issued before its first use.
template <int V>
constexpr int kSlots = 5 * V * kVec;  // shared floats per thread: three column sums, two row vectors

template <int V>
__global__ void __launch_bounds__(kMaxThreads, V == 1 ? 2 : 1)
    backward_kernel(const bf16_t* __restrict__ g_x_, const bf16_t* __restrict__ g_h_, const bf16_t* __restrict__ xn_,
                    const float* __restrict__ rstd, const bf16_t* __restrict__ w_, RowVector scale, const bf16_t* __restrict__ y_,
                    RowVector gate, bf16_t* __restrict__ dx_, bf16_t* __restrict__ dy_, float* __restrict__ part_shift,
                    float* __restrict__ part_scale, float* __restrict__ part_gate, int64_t L, int64_t D, int64_t chunks,
                    int64_t rows) {
  __shared__ float shared[2][kMaxWarps];
  // [kSlots<V>][blockDim.x]: the column sums of shift, scale and gate, then the row vectors gate and
  // (1 + scale) * weight (V * 8 floats each); each thread only ever touches its own column of it.
  extern __shared__ float slots[];
  const int64_t b = blockIdx.y, chunk = blockIdx.x;
  const int threads = static_cast<int>(blockDim.x), me = static_cast<int>(threadIdx.x);
  auto slot = [&](int which, int j, int i) -> float& { return slots[((which * V + j) * kVec + i) * threads + me]; };
  auto sum_at = [&](int which, int j, int i) -> float& { return slot(which, j, i); };  // which: 0 shift, 1 scale, 2 gate
  auto gt = [&](int j, int i) -> float& { return slot(3, j, i); };
  auto scw = [&](int j, int i) -> float& { return slot(4, j, i); };
  const Columns<V> c;
  {
    float g[V][kVec], gain[V][kVec];
    load_gate_and_gain<V>(gate, scale, w_, b, c, D, g, gain);
#pragma unroll
    for (int j = 0; j < V; ++j) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        gt(j, i) = g[j][i];
        scw(j, i) = gain[j][i];
        sum_at(0, j, i) = sum_at(1, j, i) = sum_at(2, j, i) = 0.f;
      }
    }
  }
  const int64_t end = min(L, (chunk + 1) * rows);
  int parity = 0;
  for (int64_t l = chunk * rows; l < end; ++l) {
    const int64_t row_index = b * L + l, row = row_index * D;
    float t[V][kVec], u[V][kVec], n[V][kVec], y[V][kVec];
#pragma unroll
    for (int j = 0; j < V; ++j) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) t[j][i] = u[j][i] = n[j][i] = y[j][i] = 0.f;
      if (c.col(j) >= D) continue;
      if (g_x_ != nullptr) load8(as_bf16(g_x_) + row + c.col(j), t[j]);
      if (g_h_ != nullptr) {
        load8(as_bf16(g_h_) + row + c.col(j), u[j]);
        load8(as_bf16(xn_) + row + c.col(j), n[j]);
      }
      if (y_ != nullptr) load8(as_bf16(y_) + row + c.col(j), y[j]);
    }
    if (g_h_ != nullptr) {
      const float r = rstd[row_index];
      float dot = 0.f;
#pragma unroll
      for (int j = 0; j < V; ++j) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          n[j][i] *= r;
          sum_at(0, j, i) += u[j][i];
          sum_at(1, j, i) += u[j][i] * n[j][i];
          u[j][i] *= scw(j, i);
          dot += u[j][i] * n[j][i];
        }
      }
      const float mean = block_sum(dot, shared[parity]) / static_cast<float>(D);
      parity ^= 1;
#pragma unroll
      for (int j = 0; j < V; ++j) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) t[j][i] += r * (u[j][i] - n[j][i] * mean);
      }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (c.col(j) >= D) continue;
      if (dx_ != nullptr) store8(as_bf16(dx_) + row + c.col(j), t[j]);
      if (y_ == nullptr) continue;
      float dy[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        sum_at(2, j, i) += t[j][i] * y[j][i];
        dy[i] = t[j][i] * gt(j, i);
      }
      store8(as_bf16(dy_) + row + c.col(j), dy);
    }
  }
  const int64_t at = (b * chunks + chunk) * D;
  float* const parts[3] = {part_shift, part_scale, part_gate};
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    if (parts[k] == nullptr) continue;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (c.col(j) >= D) continue;
      float v[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = sum_at(k, j, i);
      float* dst = parts[k] + at + c.col(j);
      reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
  }
}

// Second pass of the column sums, for up to three outputs at once (blockIdx.z): a block takes 32 columns of
// one sample; its kFinalLanes rows of threads add every kFinalLanes-th chunk, then one row adds the lanes,
// always in the same order.
constexpr int kFinalLanes = 16;
struct Partials {
  const float* part[3];
  ColumnSum out[3];
};

__global__ void __launch_bounds__(32 * kFinalLanes)
    column_final_kernel(Partials p, int64_t B, int64_t D, int64_t chunks) {
  __shared__ float lanes[kFinalLanes][33];
  const int64_t b = blockIdx.y, d = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const float* part = p.part[blockIdx.z];
  float s = 0.f;
  if (d < D) {
    for (int64_t k = threadIdx.y; k < chunks; k += kFinalLanes) s += part[(b * chunks + k) * D + d];
  }
  lanes[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || d >= D) return;
  float total = 0.f;
  for (int y = 0; y < kFinalLanes; ++y) total += lanes[y][threadIdx.x];
  const ColumnSum out = p.out[blockIdx.z];
  if (out.bf16 != nullptr) reinterpret_cast<bf16*>(out.bf16)[b * D + d] = __float2bfloat16_rn(total);
  else out.f32[b * D + d] = total;
}

}  // namespace

bool residual_stream_fits(int64_t D) { return D % kVec == 0 && D <= 2 * kVec * kMaxThreads; }

int64_t residual_stream_workspace(int64_t B, int64_t L, int64_t D) { return 3 * B * chunks_of(L, D) * D; }

void residual_norm_forward(const bf16_t* x, const bf16_t* y, RowVector gate, bf16_t* x_out, const bf16_t* weight, RowVector shift,
                           RowVector scale, bf16_t* h, float* rstd, int64_t B, int64_t L, int64_t D, float eps, Stream stream) {
  if (B * L == 0) return;
  const dim3 grid(static_cast<unsigned>(chunks_of(L, D)), static_cast<unsigned>(B));
  const int64_t rows = rows_per_chunk(D);
  if (vectors_per_thread(D) == 1) {
    forward_kernel<1><<<grid, threads_for(D), 0, stream>>>(x, y, gate, x_out, weight, shift, scale, h, rstd, L, D, eps, rows);
  } else {
    forward_kernel<2><<<grid, threads_for(D), 0, stream>>>(x, y, gate, x_out, weight, shift, scale, h, rstd, L, D, eps, rows);
  }
  OV_CUDA_CHECK_LAUNCH();
}

void residual_norm_backward(const bf16_t* g_x, const bf16_t* g_h, const bf16_t* x_new, const float* rstd, const bf16_t* weight,
                            RowVector scale, const bf16_t* y, RowVector gate, bf16_t* dx, bf16_t* dy, ColumnSum dshift,
                            ColumnSum dscale_n, ColumnSum dgate, float* workspace, int64_t B, int64_t L, int64_t D, Stream stream) {
  if (B * D == 0) return;
  const int64_t chunks = chunks_of(L, D);
  float* part[3] = {dshift.wanted() ? workspace : nullptr, dscale_n.wanted() ? workspace + B * chunks * D : nullptr,
                    dgate.wanted() ? workspace + 2 * B * chunks * D : nullptr};
  if (L > 0) {
    const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(B));
    const int threads = threads_for(D);
    auto launch = [&](auto kernel, int slots) {
      const size_t smem = sizeof(float) * static_cast<size_t>(slots) * static_cast<size_t>(threads);
      // Above the 48 KB default: allowed on every launch (a host-side attribute of the function on the
      // current device; cheap, and right whichever device and kernel come first).
      OV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      kernel<<<grid, threads, smem, stream>>>(g_x, g_h, x_new, rstd, weight, scale, y, gate, dx, dy, part[0], part[1], part[2], L, D, chunks,
                                                  rows_per_chunk(D));
    };
    if (vectors_per_thread(D) == 1) launch(backward_kernel<1>, kSlots<1>);
    else launch(backward_kernel<2>, kSlots<2>);
    OV_CUDA_CHECK_LAUNCH();
  }
  Partials p{};
  int outputs = 0;
  for (auto [partial, out] : {std::pair{part[0], dshift}, std::pair{part[1], dscale_n}, std::pair{part[2], dgate}}) {
    if (!out.wanted()) continue;
    p.part[outputs] = partial;
    p.out[outputs] = out;
    ++outputs;
  }
  if (outputs == 0) return;
  const dim3 grid(blocks_for(D, 32), static_cast<unsigned>(B), static_cast<unsigned>(outputs)), block(32, kFinalLanes);
  column_final_kernel<<<grid, block, 0, stream>>>(p, B, D, L > 0 ? chunks : 0);
  OV_CUDA_CHECK_LAUNCH();
}

}  // namespace ov::kernels
