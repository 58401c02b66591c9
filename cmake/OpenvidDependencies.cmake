# Finds openvid's dependencies and defines:
#   openvid::deps        an INTERFACE target carrying Torch, MPI, parallel HDF5 and Boost.Program_options
#   OPENVID_TORCH_CUDA   ON when the LibTorch found was built with CUDA
#   OPENVID_HAVE_NCCL    ON when the NCCL collectives backend is compiled (openvid::nccl then exists)
#   OPENVID_HAVE_PREPROCESS  ON when the preprocessing libraries are found (openvid::preprocess_deps then exists)

# ---- LibTorch ---------------------------------------------------------------------------------
# Either the official LibTorch archive (-DCMAKE_PREFIX_PATH=/path/to/libtorch) or the one inside a pip
# `torch` (found here through python's torch.utils.cmake_prefix_path: the repo's .venv first).
if(NOT Torch_DIR)
  set(_ov_pythons "${PROJECT_SOURCE_DIR}/.venv/bin/python3" python3)
  foreach(_py IN LISTS _ov_pythons)
    execute_process(COMMAND ${_py} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _ov_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE _ov_rc ERROR_QUIET)
    if(_ov_rc EQUAL 0 AND EXISTS "${_ov_torch_prefix}/Torch")
      list(APPEND CMAKE_PREFIX_PATH "${_ov_torch_prefix}")
      break()
    endif()
  endforeach()
endif()
find_package(Torch QUIET)
if(NOT Torch_FOUND)
  message(FATAL_ERROR
    "LibTorch was not found. Run tools/setup.sh (it makes .venv with torch==2.13.0, CPU), or point CMake at "
    "one: -DCMAKE_PREFIX_PATH=/path/to/libtorch (official archive) or "
    "-DCMAKE_PREFIX_PATH=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)').")
endif()
if(Torch_VERSION VERSION_LESS 2.4)
  message(FATAL_ERROR "openvid needs LibTorch >= 2.4; found ${Torch_VERSION} in ${Torch_DIR}.")
endif()
set(OPENVID_TORCH_CUDA OFF)
if(TARGET torch_cuda)
  set(OPENVID_TORCH_CUDA ON)
endif()

# ---- MPI ----------------------------------------------------------------------------------------
find_package(MPI REQUIRED COMPONENTS C)

# ---- parallel HDF5 ----------------------------------------------------------------------------
set(HDF5_PREFER_PARALLEL ON)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR
    "Only a serial HDF5 was found (${HDF5_C_INCLUDE_DIRS}); openvid reads datasets with MPI-IO and needs "
    "parallel HDF5. On Debian/Ubuntu: apt-get install libhdf5-openmpi-dev (tools/setup.sh does it); "
    "elsewhere point -DHDF5_ROOT at an HDF5 built with --enable-parallel.")
endif()

# ---- Boost (CONFIG mode: CMake 4 dropped FindBoost) --------------------------------------------
find_package(Boost 1.71 REQUIRED CONFIG COMPONENTS program_options
             OPTIONAL_COMPONENTS unit_test_framework)

# ---- zlib (optional): compresses the PNG contact sheets of samples (stored uncompressed without it) ------------
find_package(ZLIB QUIET)

# ---- nlohmann-json (safetensors headers, index files) -----------------------------------------------
find_package(nlohmann_json 3.2 REQUIRED CONFIG)

add_library(openvid_deps INTERFACE)
add_library(openvid::deps ALIAS openvid_deps)
# libstdc++ first: pip LibTorch wheels export their own copies of some libstdc++ symbols (seen:
# std::filesystem::remove_all in torch 2.11+cu130, which crashed when called from our code). The dynamic
# linker binds to the first library in DT_NEEDED order that defines a symbol, so the C++ runtime must
# come before libtorch for its definitions to win.
target_link_libraries(openvid_deps INTERFACE -lstdc++ ${TORCH_LIBRARIES} MPI::MPI_C Boost::program_options
                      nlohmann_json::nlohmann_json)
target_include_directories(openvid_deps SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS})
if(ZLIB_FOUND)
  target_link_libraries(openvid_deps INTERFACE ZLIB::ZLIB)
  target_compile_definitions(openvid_deps INTERFACE OPENVID_HAVE_ZLIB=1)
endif()
target_link_libraries(openvid_deps INTERFACE ${HDF5_C_LIBRARIES})
# The deprecated MPI C++ bindings are never used; skipping them keeps libmpi_cxx out of the link.
target_compile_definitions(openvid_deps INTERFACE ${HDF5_C_DEFINITIONS} OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1
                           $<$<BOOL:${OPENVID_TORCH_CUDA}>:OPENVID_TORCH_CUDA=1>)

# ---- CUDA kernels (optional) --------------------------------------------------------------------
# AUTO compiles src/kernels/*.cu whenever a CUDA toolkit with nvcc is found, also beside a CPU LibTorch
# (the kernels use no LibTorch headers): a machine without a GPU checks that they compile; they run only
# on CUDA tensors.
set(OPENVID_HAVE_KERNELS OFF)
if(NOT OPENVID_WITH_KERNELS STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND AND EXISTS "${CUDAToolkit_NVCC_EXECUTABLE}")
    if(NOT CMAKE_CUDA_COMPILER)
      set(CMAKE_CUDA_COMPILER "${CUDAToolkit_NVCC_EXECUTABLE}")
    endif()
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)  # A100, H100/H200; bf16 needs 80 or newer
    endif()
    enable_language(CUDA)
    set(OPENVID_HAVE_KERNELS ON)
  elseif(OPENVID_WITH_KERNELS STREQUAL "ON")
    message(FATAL_ERROR "OPENVID_WITH_KERNELS=ON but no CUDA toolkit with nvcc was found (set CUDAToolkit_ROOT)")
  endif()
endif()

# ---- CUDA runtime + NCCL (optional) -------------------------------------------------------------
# AUTO builds the NCCL backend when LibTorch has CUDA. ON also builds it against a CPU LibTorch (the
# backend needs only the CUDA runtime and NCCL), which is how a machine without a GPU checks it compiles.
set(OPENVID_HAVE_NCCL OFF)
if(NOT OPENVID_WITH_NCCL STREQUAL "OFF" AND (OPENVID_TORCH_CUDA OR OPENVID_WITH_NCCL STREQUAL "ON"))
  find_package(CUDAToolkit QUIET)
  set(_ov_nccl_hints $ENV{NCCL_HOME} $ENV{NCCL_ROOT})
  file(GLOB _ov_pip_nccl "${PROJECT_SOURCE_DIR}/.venv/lib/python3*/site-packages/nvidia/nccl")
  list(APPEND _ov_nccl_hints ${_ov_pip_nccl})
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_ov_nccl_hints} PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_ov_nccl_hints} PATH_SUFFIXES lib lib64)
  if(CUDAToolkit_FOUND AND NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(OPENVID_HAVE_NCCL ON)
    add_library(openvid_nccl INTERFACE)
    add_library(openvid::nccl ALIAS openvid_nccl)
    target_include_directories(openvid_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(openvid_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
    target_compile_definitions(openvid_nccl INTERFACE OPENVID_HAVE_NCCL=1)
  elseif(OPENVID_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "OPENVID_WITH_NCCL=ON but the CUDA toolkit (found: ${CUDAToolkit_FOUND}) or NCCL "
      "(nccl.h: ${NCCL_INCLUDE_DIR}, library: ${NCCL_LIBRARY}) is missing. Set NCCL_HOME, or "
      "-DNCCL_INCLUDE_DIR/-DNCCL_LIBRARY, or pip install nvidia-nccl-cu13 into .venv.")
  else()
    message(WARNING "LibTorch has CUDA but NCCL was not found: building without the NCCL backend. "
                    "Set NCCL_HOME or -DNCCL_INCLUDE_DIR/-DNCCL_LIBRARY to enable it.")
  endif()
endif()

# ---- FFmpeg and SentencePiece (optional) ------------------------------------------------------------------
# FFmpeg's libraries (Debian: libavformat-dev libavcodec-dev libswscale-dev): video files, in openvid_core when
# found (OPENVID_HAVE_FFMPEG: MP4 files of samples, the preprocessing's decoding). SentencePiece (Debian:
# libsentencepiece-dev): T5's tokenizer. The preprocessing library and tool need both (AUTO builds them when
# both are found; tools/setup.sh installs them); training needs neither.
set(OPENVID_HAVE_PREPROCESS OFF)
set(OPENVID_HAVE_FFMPEG OFF)
if(NOT OPENVID_WITH_PREPROCESS STREQUAL "OFF")
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(OPENVID_SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
    pkg_check_modules(OPENVID_FFMPEG QUIET IMPORTED_TARGET libavformat libavcodec libswscale libavutil)
  endif()
  if(OPENVID_FFMPEG_FOUND)
    set(OPENVID_HAVE_FFMPEG ON)
    target_link_libraries(openvid_deps INTERFACE PkgConfig::OPENVID_FFMPEG)
    target_compile_definitions(openvid_deps INTERFACE OPENVID_HAVE_FFMPEG=1)
  endif()
  if(OPENVID_SENTENCEPIECE_FOUND AND OPENVID_FFMPEG_FOUND)
    set(OPENVID_HAVE_PREPROCESS ON)
    add_library(openvid_preprocess_deps INTERFACE)
    add_library(openvid::preprocess_deps ALIAS openvid_preprocess_deps)
    target_link_libraries(openvid_preprocess_deps INTERFACE PkgConfig::OPENVID_SENTENCEPIECE)
    # libsentencepiece and LibTorch's libc10 both define the global int FLAGS_minloglevel (sentencepiece's is
    # an object of its own flags library). With libc10 first in the lookup order, sentencepiece's start-up
    # constructs its object over libc10's int and the bytes after it (seen: a mutex of c10 corrupted, so the
    # first TorchScript call hung). Named first, before LibTorch, sentencepiece's definition wins for both;
    # its first member is the int's value, which is all libc10 reads. test_text holds the two together.
    set(_ov_spm ${OPENVID_SENTENCEPIECE_LINK_LIBRARIES})
    list(FILTER _ov_spm INCLUDE REGEX "libsentencepiece\\.")
    target_link_options(openvid_preprocess_deps INTERFACE "LINKER:--push-state,--no-as-needed" ${_ov_spm} "LINKER:--pop-state")
  else()
    set(_ov_missing "")
    if(NOT OPENVID_SENTENCEPIECE_FOUND)
      string(APPEND _ov_missing " libsentencepiece-dev")
    endif()
    if(NOT OPENVID_FFMPEG_FOUND)
      string(APPEND _ov_missing " libavformat-dev libavcodec-dev libswscale-dev")
    endif()
    if(OPENVID_WITH_PREPROCESS STREQUAL "ON")
      message(FATAL_ERROR "OPENVID_WITH_PREPROCESS=ON but pkg-config does not find its libraries: apt-get install${_ov_missing} "
                          "(tools/setup.sh does it)")
    endif()
    message(STATUS "building without openvid_preprocess: apt-get install${_ov_missing} to have it")
  endif()
endif()
