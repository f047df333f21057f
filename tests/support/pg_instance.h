#pragma once
// A private PostgreSQL server for one test binary: initdb into a temporary folder,
// listening on 127.0.0.1 only, run as the `postgres` user when the tests run as root
// (the server refuses root).

#include <string>

namespace surplus::testing {

class PgInstance {
 public:
  /// Starts a server; aborts the test binary with a clear message when it cannot.
  PgInstance();
  ~PgInstance();

  /// URI of a new, empty database on this server.
  std::string CreateDatabase(const std::string& name);
  int port() const { return port_; }
  std::string dir() const { return dir_; }

  /// Stops the server (fast shutdown) and starts it again on the same port.
  void Stop();
  void Start();

 private:
  std::string RunAsOwner(const std::string& shell_command, int* rc);
  std::string dir_;
  int port_ = 0;
  bool as_postgres_ = false;
};

/// One server shared by all tests of the binary (started on first use).
PgInstance& SharedPg();

}  // namespace surplus::testing
