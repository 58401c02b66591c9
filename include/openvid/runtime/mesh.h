#pragma once
// The rank mesh dp x fs x cp (cp fastest, then fs, then dp), as plain arithmetic with no MPI in it so
// that every layout can be checked without launching ranks.
//
//   world rank = (d * fs + f) * cp + c
//   shard group  (FSDP, fs*cp ranks): same d          -> parameters, gradients, optimizer state sharded here
//   cp group     (cp ranks)         : same d and f    -> one sample's video tokens split here ("same data")
//   dp group     (dp ranks)         : same f and c    -> replicas of one shard; gradients all-reduced here
//   data rank    = d * fs + f, of dp*fs: the ranks that read different samples
#include <string>
#include <vector>

namespace ov {

struct MeshCoord {
  int dp = 0;
  int fs = 0;
  int cp = 0;
  bool operator==(const MeshCoord&) const = default;
};

class Mesh {
 public:
  // Throws ov::InputError with a message saying what to change when world_size is not a positive
  // multiple of fs*cp or a factor is < 1.
  static Mesh make(int world_size, int fs, int cp);

  int world_size() const { return dp_ * fs_ * cp_; }
  int dp() const { return dp_; }
  int fs() const { return fs_; }
  int cp() const { return cp_; }
  int shard_size() const { return fs_ * cp_; }
  int num_data_ranks() const { return dp_ * fs_; }

  MeshCoord coord(int rank) const;
  int rank_of(MeshCoord c) const;
  int data_rank(int rank) const;

  // World ranks of each group that `rank` belongs to, ascending; the position of `rank` in the list is
  // its rank inside that group.
  std::vector<int> shard_group(int rank) const;
  std::vector<int> cp_group(int rank) const;
  std::vector<int> dp_group(int rank) const;

  // Colour for MPI_Comm_split of each group (equal colour == same group); key is the world rank.
  int shard_color(int rank) const { return coord(rank).dp; }
  int cp_color(int rank) const { return data_rank(rank); }
  int dp_color(int rank) const { return rank % shard_size(); }

  std::string describe() const;  // "dp=2 x fs=2 x cp=1 (4 ranks)"

 private:
  Mesh(int dp, int fs, int cp) : dp_(dp), fs_(fs), cp_(cp) {}
  void check_rank(int rank) const;
  int dp_, fs_, cp_;
};

}  // namespace ov
