// OpenSSL's libcrypto, for SHA-256 only (EVP one-shot digest).
#include <openssl/evp.h>
