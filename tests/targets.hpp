// Targets the tests run in other processes, and a user type that travels by serialize().
#pragma once

#include <map>
#include <string>
#include <vector>

namespace multiproc_test {

/// A user type: travels through its serialize() member.
struct point {
  int x = 0;
  int y = 0;
  std::string label;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(x, y, label);
  }
  bool operator==(const point&) const = default;
};

/// A type whose decoding always fails (its load throws), to test decode failures.
struct undecodable {
  int value = 0;
  template <class Archive>
  void save(Archive& archive) const {
    archive(value);
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(value);
    throw std::runtime_error("undecodable: refusing to load");
  }
};

}  // namespace multiproc_test
