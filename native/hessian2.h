/* hessian2: skip and read values in a Dubbo body (placeholder). */
#ifndef NODEMESH_HESSIAN2_H
#define NODEMESH_HESSIAN2_H
#include "internal.h"
#endif
