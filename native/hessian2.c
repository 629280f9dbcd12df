/* hessian2 value reader used by dubbo.c (placeholder). */
#include "hessian2.h"
