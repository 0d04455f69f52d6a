// A tiny corpus written by the tests (JSON only, plus optional files), so data tests never need
// ../shared/data. Roles come from a README table in the corpus format.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

namespace segicl::data::testing {

inline std::filesystem::path make_test_corpus(const std::string& tag) {
  namespace fs = std::filesystem;
  fs::path root = fs::temp_directory_path() / ("segicl_corpus_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(root);
  for (const char* name : {"train_ct", "ood_mr", "suite"}) fs::create_directories(root / name);
  std::ofstream(root / "README.md") << "| dataset | dims | modality | region | cases | tasks | role | split |\n"
                                       "|---|---|---|---|---|---|---|---|\n"
                                       "| `train_ct` | 3D | CT | abdomen | 20 | liver | train | **test = 00** |\n"
                                       "| `ood_mr` | 3D | MR | abdomen | 4 | liver | **ood** | all queries |\n"
                                       "| `suite` | 2D | mixed | mixed | 2 | per case | **eval** | all queries |\n";
  std::string cases;
  for (int i = 0; i < 20; ++i) {
    char id[8];
    std::snprintf(id, sizeof id, "%02d", i);
    cases += std::string(i ? "," : "") + R"({"id": "train_ct_)" + id + R"(", "group": ")" + id +
             R"(", "image": "images/)" + id + R"(.nii.gz", "label": "labels/)" + id + R"(.nii.gz"})";
  }
  std::ofstream(root / "train_ct" / "dataset.json")
      << R"({"name": "train_ct", "modality": "CT", "region": "abdomen", "dims": 3,
             "labels": {"1": "liver", "2": "spleen"}, "cases": [)" << cases << "]}";
  std::ofstream(root / "ood_mr" / "dataset.json")
      << R"({"name": "ood_mr", "modality": "MR", "dims": 3, "labels": {"1": "liver"},
             "cases": [{"id": "a", "group": "p1", "image": "images/a.nii.gz", "label": "labels/a.nii.gz"}]})";
  std::ofstream(root / "suite" / "dataset.json")
      << R"({"name": "suite", "dims": 2, "cases": [
             {"id": "s1", "group": "g1", "image": "images/s1.png", "label": "labels/s1.png", "task": "X/heart", "labels": {"1": "heart"}},
             {"id": "s2", "group": "g2", "image": "images/s2.png", "label": "labels/s2.png", "task": "Y/lung", "labels": {"1": "lung"}}]})";
  return root;
}

}  // namespace segicl::data::testing
