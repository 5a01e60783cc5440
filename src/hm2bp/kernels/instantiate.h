/* Includes the body file named by HM2BP_TEMPLATE twice: with TYPE float (SUFFIX f32), then with TYPE
 * double (SUFFIX f64). The float/double template of the kernels, in place of multi-line macros:
 *     #define HM2BP_TEMPLATE "fc_backward_body.h"
 *     #include "instantiate.h"
 * No include guard: it is meant to be included once per body file. */
#define TYPE float
#define SUFFIX f32
#include HM2BP_TEMPLATE
#undef TYPE
#undef SUFFIX
#define TYPE double
#define SUFFIX f64
#include HM2BP_TEMPLATE
#undef TYPE
#undef SUFFIX
#undef HM2BP_TEMPLATE
