// MPI's predefined handles for a libmpi found at run time (dlsym), shared by
// the addon's MPI collectives (native/addon/mpi.cc) and the emulated NCCL
// (native/cuda/emu/nccl.cc). They differ by ABI: OpenMPI's are addresses of
// exported objects, MPICH's (also Intel MPI, MVAPICH, Cray MPICH) fixed
// integers from its mpi.h; both fit in an intptr_t passed where the C API
// expects a handle.
#pragma once
#include <dlfcn.h>

#include <cstdint>

namespace gptcuda {

struct MpiAbi {
  const char* impl = nullptr;
  intptr_t comm_world = 0, f32 = 0, f64 = 0, i32 = 0, byte = 0;
  intptr_t sum = 0, prod = 0, max = 0, min = 0, errors_return = 0;
  void* in_place = nullptr;
};

// False when lib is OpenMPI but some handle is missing (an incomplete libmpi).
inline bool mpi_abi(void* lib, MpiAbi* a) {
  if (void* w = dlsym(lib, "ompi_mpi_comm_world")) {
    auto h = [&](const char* name) { return intptr_t(dlsym(lib, name)); };
    a->impl = "OpenMPI";
    a->comm_world = intptr_t(w);
    a->f32 = h("ompi_mpi_float");
    a->f64 = h("ompi_mpi_double");
    a->i32 = h("ompi_mpi_int");
    a->byte = h("ompi_mpi_byte");
    a->sum = h("ompi_mpi_op_sum");
    a->prod = h("ompi_mpi_op_prod");
    a->max = h("ompi_mpi_op_max");
    a->min = h("ompi_mpi_op_min");
    a->errors_return = h("ompi_mpi_errors_return");
    a->in_place = reinterpret_cast<void*>(1);
  } else {
    a->impl = "MPICH";
    a->comm_world = 0x44000000;
    a->f32 = 0x4c00040a;
    a->f64 = 0x4c00080b;
    a->i32 = 0x4c000405;
    a->byte = 0x4c00010d;
    a->sum = 0x58000003;
    a->prod = 0x58000004;
    a->max = 0x58000001;
    a->min = 0x58000002;
    a->errors_return = 0x54000001;
    a->in_place = reinterpret_cast<void*>(intptr_t(-1));
  }
  return a->f32 && a->f64 && a->i32 && a->byte && a->sum && a->prod && a->max && a->min && a->errors_return;
}

}  // namespace gptcuda
