#pragma once
// HTTP endpoints of surplus-control: /healthz, /metrics (Prometheus text format) and a
// small capacity dashboard at / (reads /api/capacity).

#include <memory>
#include <string>
#include <thread>

#include "src/api/context.h"
#include "src/control/scheduling_loop.h"

namespace httplib {
class Server;
}

namespace surplus::control {

class HttpServer {
 public:
  HttpServer(api::ApiContext& ctx, const LoopStats& stats);
  ~HttpServer();
  /// Binds `listen` ("host:port") and serves on a thread. False when it cannot bind.
  bool Start(const std::string& listen);
  void Stop();

 private:
  api::ApiContext& ctx_;
  const LoopStats& stats_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace surplus::control
