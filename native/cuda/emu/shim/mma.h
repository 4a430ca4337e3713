// WMMA for the emulated backend: provided by the SIMT emulator.
#pragma once
#include "simt.h"
