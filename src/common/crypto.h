#pragma once
// Randomness and hashing for API keys.

#include <string>

#include "absl/strings/string_view.h"

namespace surplus {

/// `n` bytes from the kernel's CSPRNG, hex-encoded (2n characters).
std::string RandomHex(size_t n);

/// Lower-case hex SHA-256 of `data`.
std::string Sha256Hex(absl::string_view data);

/// A new API key secret: "sk_" + 64 hex characters (256 bits).
std::string NewApiKeySecret();

}  // namespace surplus
