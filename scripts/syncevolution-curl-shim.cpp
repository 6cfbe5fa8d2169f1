// LD_PRELOAD shim for SyncEvolution 2.0 (Debian 12) as a SyncML *client*.
//
// Its CurlTransportAgent hands libcurl NULL read and write callbacks (CURLOPT_READFUNCTION,
// CURLOPT_WRITEFUNCTION), so libcurl falls back to fread()/fwrite() on the agent object and the
// first POST dies with SIGSEGV in _IO_fread. This shim replaces a NULL callback with a trampoline
// to the agent's own (exported) readData()/writeData(), the functions the callbacks forward to.
//
//   g++ -std=c++11 -shared -fPIC -O2 -o /tmp/curlshim.so scripts/syncevolution-curl-shim.cpp -ldl
//   LD_PRELOAD=/tmp/curlshim.so syncevolution --run <config>
//
// tests/test_ds_syncevolution_client.py builds and uses it.
#include <dlfcn.h>
#include <cstdarg>
#include <cstddef>

namespace SyncEvo {
class CurlTransportAgent {
public:
    size_t readData(void *buffer, size_t size) throw();
    size_t writeData(void *buffer, size_t size) throw();
};
}  // namespace SyncEvo

static size_t read_cb(char *buf, size_t size, size_t n, void *agent) {
    return static_cast<SyncEvo::CurlTransportAgent *>(agent)->readData(buf, size * n);
}

static size_t write_cb(char *buf, size_t size, size_t n, void *agent) {
    return static_cast<SyncEvo::CurlTransportAgent *>(agent)->writeData(buf, size * n);
}

extern "C" int curl_easy_setopt(void *handle, int option, ...) {
    static int (*real)(void *, int, ...);
    if (!real) real = reinterpret_cast<int (*)(void *, int, ...)>(dlsym(RTLD_NEXT, "curl_easy_setopt"));
    va_list ap;
    va_start(ap, option);
    void *arg = va_arg(ap, void *);  // every option value is pointer-sized on x86-64
    va_end(ap);
    const int CURLOPT_WRITEFUNCTION = 20011, CURLOPT_READFUNCTION = 20012;
    if (option == CURLOPT_READFUNCTION && arg == nullptr) arg = reinterpret_cast<void *>(read_cb);
    if (option == CURLOPT_WRITEFUNCTION && arg == nullptr) arg = reinterpret_cast<void *>(write_cb);
    return real(handle, option, arg);
}
