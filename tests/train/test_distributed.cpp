// Data-parallel training, the host part (include/staticgrad/train/distributed.hpp):
//  - the launcher environment: good values, and clear errors for bad ones;
//  - the NCCL id exchange through a file and over TCP (threads as ranks).
// The loop's sharding: test_distributed_loop.cpp.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <thread>

#include "staticgrad/train/distributed.hpp"

using namespace staticgrad;
namespace fs = std::filesystem;

namespace {

train::env_getter env_of(std::map<std::string, std::string> m) {
  auto held = std::make_shared<std::map<std::string, std::string>>(std::move(m));
  return [held](const char* k) -> const char* {
    auto it = held->find(k);
    return it == held->end() ? nullptr : it->second.c_str();
  };
}

std::string error_of(const train::env_getter& g) {
  try {
    train::dist_env_from(g);
  } catch (const staticgrad::error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("dist_env_from: the launcher's variables, and errors naming the bad one") {
  CHECK_FALSE(train::dist_env_from(env_of({})).has_value());
  const auto e = train::dist_env_from(env_of({{"WORLD_SIZE", "4"}, {"RANK", "2"}, {"LOCAL_RANK", "1"},
                                              {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}}));
  REQUIRE(e.has_value());
  CHECK(e->world == 4);
  CHECK(e->rank == 2);
  CHECK(e->local_rank == 1);
  CHECK(e->master_addr == "127.0.0.1");
  CHECK(e->master_port == 29500);
  CHECK(e->timeout_s == 600);
  const auto f = train::dist_env_from(
      env_of({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"STATICGRAD_NCCL_ID_FILE", "/tmp/x"}, {"STATICGRAD_NCCL_TIMEOUT", "5"}}));
  REQUIRE(f.has_value());
  CHECK(f->local_rank == 1);  // LOCAL_RANK defaults to RANK (one host)
  CHECK(f->id_file == "/tmp/x");
  CHECK(f->timeout_s == 5);
  const auto one = train::dist_env_from(env_of({{"WORLD_SIZE", "1"}, {"RANK", "0"}}));
  REQUIRE(one.has_value());  // one rank needs no id exchange
  CHECK(one->world == 1);

  const std::map<std::string, std::string> ok = {{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"STATICGRAD_NCCL_ID_FILE", "/tmp/x"}};
  auto with = [&](const std::string& k, const std::string& v) {
    auto m = ok;
    m[k] = v;
    return env_of(m);
  };
  CHECK(error_of(with("RANK", "abc")).find("environment variable RANK") != std::string::npos);
  CHECK(error_of(with("RANK", "2")).find("expected a whole number in [0, 1]") != std::string::npos);
  CHECK(error_of(with("RANK", "-1")).find("RANK") != std::string::npos);
  CHECK(error_of(with("WORLD_SIZE", "0")).find("environment variable WORLD_SIZE") != std::string::npos);
  CHECK(error_of(with("WORLD_SIZE", "2x")).find("WORLD_SIZE") != std::string::npos);
  CHECK(error_of(with("LOCAL_RANK", "7")).find("LOCAL_RANK") != std::string::npos);
  CHECK(error_of(with("MASTER_PORT", "70000")).find("MASTER_PORT") != std::string::npos);
  CHECK(error_of(with("STATICGRAD_NCCL_TIMEOUT", "0")).find("STATICGRAD_NCCL_TIMEOUT") != std::string::npos);
  CHECK(error_of(env_of({{"WORLD_SIZE", "2"}})).find("RANK is not") != std::string::npos);
  CHECK(error_of(env_of({{"WORLD_SIZE", "2"}, {"RANK", "1"}})).find("MASTER_ADDR and MASTER_PORT") != std::string::npos);
}

TEST_CASE("the NCCL id reaches every rank through a file and over TCP") {
  train::id_blob id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<char>(i * 7 + 3);
  const fs::path dir = fs::path(STATICGRAD_BINARY_DIR) / "train_out" / "nccl_id";
  fs::remove_all(dir);
  fs::create_directories(dir);

  SUBCASE("file: rank 0 writes it (temporary + rename), the others poll") {
    train::dist_env e;
    e.world = 3, e.id_file = (dir / "id").string(), e.timeout_s = 20;
    std::vector<train::id_blob> got(3);
    std::vector<std::thread> ts;
    for (int r = 2; r >= 0; --r)  // the readers start first
      ts.emplace_back([&, r] {
        auto me = e;
        me.rank = r;
        got[static_cast<std::size_t>(r)] = train::exchange_id(me, [&] { return id; });
      });
    for (auto& t : ts) t.join();
    for (const auto& g : got) CHECK(g == id);
    CHECK_THROWS_WITH_AS(train::wait_id_file(dir / "missing", 0.1),
                         doctest::Contains("did not write the NCCL id"), staticgrad::error);
  }

  SUBCASE("TCP: rank 0 serves MASTER_PORT, the others connect with retries") {
    // A free port: bind port 0, read it back, release it.
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    socklen_t len = sizeof(a);
    ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
    const int port = ntohs(a.sin_port);
    ::close(s);
    train::dist_env e;
    e.world = 3, e.master_addr = "127.0.0.1", e.master_port = port, e.timeout_s = 20;
    std::vector<train::id_blob> got(3);
    std::vector<std::thread> ts;
    for (int r = 2; r >= 0; --r)  // the clients start before rank 0 listens: they retry
      ts.emplace_back([&, r] {
        if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
        auto me = e;
        me.rank = r;
        got[static_cast<std::size_t>(r)] = train::exchange_id(me, [&] { return id; });
      });
    for (auto& t : ts) t.join();
    for (const auto& g : got) CHECK(g == id);
    CHECK_THROWS_WITH_AS(train::fetch_id_tcp("127.0.0.1", port, 0.3), doctest::Contains("could not fetch the NCCL id"),
                         staticgrad::error);
  }
}

