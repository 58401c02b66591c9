#include "openvid/runtime/mesh.h"

#include <sstream>

#include "openvid/runtime/error.h"

namespace ov {

Mesh Mesh::make(int world_size, int fs, int cp) {
  if (fs < 1) throw InputError("--fs must be >= 1 (got " + std::to_string(fs) + ")");
  if (cp < 1) throw InputError("--cp must be >= 1 (got " + std::to_string(cp) + ")");
  if (world_size < 1) throw InputError("world size must be >= 1 (got " + std::to_string(world_size) + ")");
  const int shard = fs * cp;
  if (world_size % shard != 0) {
    std::ostringstream os;
    os << "the world size " << world_size << " is not divisible by fs*cp = " << fs << "*" << cp << " = "
       << shard << ": launch a multiple of " << shard << " ranks, or choose --fs and --cp whose product "
       << "divides " << world_size;
    throw InputError(os.str());
  }
  return Mesh(world_size / shard, fs, cp);
}

void Mesh::check_rank(int rank) const {
  OV_CHECK(rank >= 0 && rank < world_size(),
           "rank " + std::to_string(rank) + " is outside the mesh " + describe());
}

MeshCoord Mesh::coord(int rank) const {
  check_rank(rank);
  return MeshCoord{rank / (fs_ * cp_), (rank / cp_) % fs_, rank % cp_};
}

int Mesh::rank_of(MeshCoord c) const {
  OV_CHECK(c.dp >= 0 && c.dp < dp_ && c.fs >= 0 && c.fs < fs_ && c.cp >= 0 && c.cp < cp_,
           "mesh coordinate out of range for " + describe());
  return (c.dp * fs_ + c.fs) * cp_ + c.cp;
}

int Mesh::data_rank(int rank) const {
  const MeshCoord c = coord(rank);
  return c.dp * fs_ + c.fs;
}

std::vector<int> Mesh::shard_group(int rank) const {
  const MeshCoord me = coord(rank);
  std::vector<int> out;
  for (int f = 0; f < fs_; ++f)
    for (int c = 0; c < cp_; ++c) out.push_back(rank_of({me.dp, f, c}));
  return out;
}

std::vector<int> Mesh::cp_group(int rank) const {
  const MeshCoord me = coord(rank);
  std::vector<int> out;
  for (int c = 0; c < cp_; ++c) out.push_back(rank_of({me.dp, me.fs, c}));
  return out;
}

std::vector<int> Mesh::dp_group(int rank) const {
  const MeshCoord me = coord(rank);
  std::vector<int> out;
  for (int d = 0; d < dp_; ++d) out.push_back(rank_of({d, me.fs, me.cp}));
  return out;
}

std::string Mesh::describe() const {
  std::ostringstream os;
  os << "dp=" << dp_ << " x fs=" << fs_ << " x cp=" << cp_ << " (" << world_size() << " ranks)";
  return os.str();
}

}  // namespace ov
