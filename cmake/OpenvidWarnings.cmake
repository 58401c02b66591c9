# The precompiled LibTorch headers (cmake/openvid_pch.h) for a C++ target; OPENVID_PCH=OFF turns them off.
option(OPENVID_PCH "Precompile the LibTorch headers (faster builds)" ON)
function(openvid_precompiled_header target)
  if(OPENVID_PCH)
    target_precompile_headers(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${PROJECT_SOURCE_DIR}/cmake/openvid_pch.h>)
  endif()
endfunction()

# Warnings for openvid's own targets only (third-party headers are included as SYSTEM).
function(openvid_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                 -Wold-style-cast -Wcast-align -Woverloaded-virtual
                                 -Wformat=2>)
    if(OPENVID_WERROR)
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
    endif()
  endif()
endfunction()
