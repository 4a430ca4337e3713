{
  # Fallback build for machines without cmake: CPU backend only, internal GEMM.
  # scripts/build-native.mjs runs node-gyp with this file only when cmake is
  # absent ("gypfile": false in package.json keeps npm from running it too).
  "targets": [
    {
      "target_name": "gptcuda",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('native/addon').filter(f=>f.endsWith('.cc')).map(f=>'native/addon/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/cpu').filter(f=>f.endsWith('.cc')).map(f=>'native/cpu/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/text').filter(f=>f.endsWith('.cc')).map(f=>'native/text/'+f).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/include"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "GPTCUDA_BLAS_NAME=\"none (internal blocked GEMM)\"",
        "GPTCUDA_CUDA_STATUS=\"not built (node-gyp fallback build is CPU only)\""
      ],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-fexceptions"],
      "libraries": ["-lpthread", "-ldl"]
    }
  ]
}
