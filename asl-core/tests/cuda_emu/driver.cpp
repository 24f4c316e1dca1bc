// Runs launches of asl.cu's kernels under the host CUDA emulation (emu.h), as the CUDA driver
// would: each argument is handed over as a pointer to its value, and the kernel's parameter list
// decides how many bytes are read. Unlike the driver, it checks that every argument has exactly
// the size of its parameter, and that no kernel writes outside its buffers (guard bytes).
//
// Used by tests/cuda_mirror/emulated.rs, which writes the request and reads the buffers back.
//
//   driver REQUEST OUTPUT
//
// REQUEST (little-endian):
//   "ASLEMU1\0", u32 order (0 forward, 1 reverse, 2 shuffled), u64 seed
//   u32 buffers; each: u64 bytes, u8 fill (0: the bytes follow, 1: 0xFF bytes, i.e. garbage
//     standing for uninitialised memory, 2: zeros)
//   u32 launches; each: u32 name length, name, u32 blocks, u32 threads, u32 args; each arg:
//     u8 kind (0: buffer, then u32 index; 1: null pointer; 2: value, then u32 size and the bytes)
// OUTPUT: every buffer's bytes, in order.
// Exit status 0; 2 for a malformed request or I/O error; 3 for a failed check (with a message).

#include "emu.h"

#include "asl.cu"

#include <cstddef>
#include <map>
#include <tuple>
#include <utility>

namespace {

// One argument as the driver receives it: where its value is, and how many bytes it has.
struct Param {
    const void *value;
    uint32_t size;
};

struct Kernel {
    std::vector<size_t> sizes; // of the parameters
    bool cooperative;          // uses barriers or shuffles
    std::function<void(const std::vector<Param> &)> call;
};

template <typename... A, size_t... I>
void call_with(void (*f)(A...), const std::vector<Param> &p, std::index_sequence<I...>) {
    // Each parameter is read from its argument's bytes, as the driver copies them.
    std::tuple<A...> args;
    ((std::memcpy(&std::get<I>(args), p[I].value, sizeof(A))), ...);
    f(std::get<I>(args)...);
}

template <typename... A> Kernel kernel(void (*f)(A...), bool cooperative) {
    Kernel k;
    k.sizes = {sizeof(A)...};
    k.cooperative = cooperative;
    k.call = [f](const std::vector<Param> &p) {
        call_with(f, p, std::index_sequence_for<A...>{});
    };
    return k;
}

#define REG(name, coop) {#name, kernel(&name, coop)},
#define REG_ML(L)                                                                                  \
    REG(asl_ml_##L##_u8, true)                                                                    \
    REG(asl_ml_##L##_u32, true)                                                                   \
    REG(asl_ml_##L##_i64, true)                                                                   \
    REG(asl_ml_##L##_f16, true)                                                                   \
    REG(asl_ml_##L##_bf16, true)                                                                  \
    REG(asl_ml_##L##_f32, true)                                                                   \
    REG(asl_ml_##L##_f64, true)                                                                   \
    REG(asl_sl_##L##_u8, true)                                                                    \
    REG(asl_sl_##L##_u32, true)                                                                   \
    REG(asl_sl_##L##_i64, true)                                                                   \
    REG(asl_scale_scalar_##L, false)                                                              \
    REG(asl_scale_rows_##L, false)

const std::map<std::string, Kernel> &registry() {
    static const std::map<std::string, Kernel> r = {
        REG_ML(f16) REG_ML(bf16) REG_ML(f32) REG_ML(f64)
        REG(asl_sum_partials_f32, true) REG(asl_sum_partials_f64, true)};
    return r;
}

struct Reader {
    FILE *f;
    template <typename T> T get() {
        T v;
        if (std::fread(&v, sizeof v, 1, f) != 1) {
            std::fprintf(stderr, "driver: short request\n");
            std::exit(2);
        }
        return v;
    }
    void bytes(void *dst, size_t n) {
        if (n > 0 && std::fread(dst, 1, n, f) != n) {
            std::fprintf(stderr, "driver: short request\n");
            std::exit(2);
        }
    }
};

// A buffer between guard bytes.
constexpr size_t GUARD = 64;
constexpr unsigned char GUARD_BYTE = 0xA5;

struct Buffer {
    std::vector<unsigned char> mem;
    size_t size;
    unsigned char *data() { return mem.data() + GUARD; }
};

} // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: driver REQUEST OUTPUT\n");
        return 2;
    }
    FILE *in = std::fopen(argv[1], "rb");
    if (!in) {
        std::fprintf(stderr, "driver: cannot open %s\n", argv[1]);
        return 2;
    }
    Reader r{in};
    char magic[8];
    r.bytes(magic, 8);
    if (std::memcmp(magic, "ASLEMU1", 8) != 0) {
        std::fprintf(stderr, "driver: not a request\n");
        return 2;
    }
    asl_emu::State &s = asl_emu::state();
    s.order = static_cast<asl_emu::Order>(r.get<uint32_t>());
    s.rng = r.get<uint64_t>() | 1;

    std::vector<Buffer> bufs(r.get<uint32_t>());
    for (auto &b : bufs) {
        b.size = r.get<uint64_t>();
        b.mem.assign(b.size + 2 * GUARD, GUARD_BYTE);
        switch (r.get<uint8_t>()) {
        case 0:
            r.bytes(b.data(), b.size);
            break;
        case 1:
            std::memset(b.data(), 0xFF, b.size);
            break;
        default:
            std::memset(b.data(), 0, b.size);
        }
    }

    const uint32_t launches = r.get<uint32_t>();
    for (uint32_t l = 0; l < launches; l++) {
        std::string name(r.get<uint32_t>(), '\0');
        r.bytes(name.data(), name.size());
        const uint32_t blocks = r.get<uint32_t>();
        const uint32_t threads = r.get<uint32_t>();
        const uint32_t nargs = r.get<uint32_t>();
        // Pointers and values live here until the launch is done.
        std::vector<std::vector<unsigned char>> values(nargs);
        std::vector<Param> params(nargs);
        for (uint32_t a = 0; a < nargs; a++) {
            const uint8_t kind = r.get<uint8_t>();
            if (kind == 0 || kind == 1) {
                void *ptr = nullptr;
                if (kind == 0) {
                    const uint32_t i = r.get<uint32_t>();
                    if (i >= bufs.size()) {
                        asl_emu::fail(name + ": argument " + std::to_string(a) +
                                      " names buffer " + std::to_string(i) + " of " +
                                      std::to_string(bufs.size()));
                    }
                    ptr = bufs[i].data();
                }
                values[a].resize(sizeof ptr);
                std::memcpy(values[a].data(), &ptr, sizeof ptr);
            } else {
                values[a].resize(r.get<uint32_t>());
                r.bytes(values[a].data(), values[a].size());
            }
            params[a] = Param{values[a].data(), (uint32_t)values[a].size()};
        }
        const auto found = registry().find(name);
        if (found == registry().end()) {
            asl_emu::fail("no kernel " + name + " in asl.cu's registry");
        }
        const Kernel &k = found->second;
        if (params.size() != k.sizes.size()) {
            asl_emu::fail(name + ": " + std::to_string(params.size()) + " arguments, the kernel has " +
                          std::to_string(k.sizes.size()) + " parameters");
        }
        for (size_t a = 0; a < params.size(); a++) {
            if (params[a].size != k.sizes[a]) {
                asl_emu::fail(name + ": argument " + std::to_string(a) + " has " +
                              std::to_string(params[a].size) + " bytes, its parameter " +
                              std::to_string(k.sizes[a]));
            }
        }
        asl_emu::launch(name, blocks, threads, k.cooperative, [&]() { k.call(params); });
        for (size_t i = 0; i < bufs.size(); i++) {
            Buffer &b = bufs[i];
            for (size_t g = 0; g < GUARD; g++) {
                if (b.mem[g] != GUARD_BYTE || b.mem[GUARD + b.size + g] != GUARD_BYTE) {
                    asl_emu::fail(name + " wrote outside buffer " + std::to_string(i) + " (" +
                                  std::to_string(b.size) + " bytes)");
                }
            }
        }
    }
    std::fclose(in);

    FILE *out = std::fopen(argv[2], "wb");
    if (!out) {
        std::fprintf(stderr, "driver: cannot create %s\n", argv[2]);
        return 2;
    }
    for (auto &b : bufs) {
        if (b.size > 0 && std::fwrite(b.data(), 1, b.size, out) != b.size) {
            std::fprintf(stderr, "driver: cannot write %s\n", argv[2]);
            return 2;
        }
    }
    return std::fclose(out) == 0 ? 0 : 2;
}
