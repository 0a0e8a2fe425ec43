// Counters and latency histograms of the daemon, rendered as Prometheus text.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pitbox::control {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size()) {}
  void observe(double seconds);
  // The lines of a Prometheus histogram called `name` (without its HELP and TYPE lines when
  // `help` is empty), its series labelled with `label` ("op=\"pause\"") when given.
  std::string render(const std::string& name, const std::string& help,
                     const std::string& label = "") const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

struct Metrics {
  Histogram create_seconds{{0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}};
  // Durations of sandbox operations by name (pause, resume, resize, snapshot, fork, ...).
  std::map<std::string, Histogram> operations;
  Histogram& operation_seconds(const std::string& op) {
    return operations
        .try_emplace(op, std::vector<double>{0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                             1, 5, 30})
        .first->second;
  }
  Histogram exec_seconds{{0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30}};
  std::map<int, uint64_t> http_responses;  // by status code
};

// Escapes a label value for the Prometheus text format.
std::string prometheus_label(const std::string& value);

}  // namespace pitbox::control
