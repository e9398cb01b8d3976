/*
** knn.h - exact k-nearest-neighbour search stored inside the database.
**
** See knn_sql.c for the SQL interface (facevec_knn, facevec_knn_build, ...).
*/
#ifndef FACEVEC_KNN_H
#define FACEVEC_KNN_H

#include "sqlite3ext.h"

/* Register the facevec_knn table-valued function and its companion SQL
** functions on db. Returns an SQLite result code. */
int fv_knn_register(sqlite3 *db);

#endif /* FACEVEC_KNN_H */
