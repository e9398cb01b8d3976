# ruff: noqa
# fmt: off
"""The seed's server-side SQL, kept verbatim (sefiks.com, "Deep Face Recognition
with Relational Databases and SQL", 2021, and its notebook Face-Recognition-SQL.ipynb
in serengil/tensorflow-101): built from a target embedding exactly as the seed
builds it, then run unchanged against a facevec database by test_find.py."""


def seed_query(target_embedding):
    """The seed's server-side query, verbatim (sefiks.com, "Deep Face Recognition
    with SQL", 2021, and its notebook Face-Recognition-SQL.ipynb)."""
    target_statement = ""
    for i, value in enumerate(target_embedding):
        target_statement += "select %d as dimension, %s as value" % (i, str(value)) #sqlite
        #target_statement += "select %d as dimension, %s as value from dual" % (i, str(value)) #oracle

        if i < len(target_embedding) - 1:
            target_statement += " union all "

    select_statement = f"""
    select * 
    from (
        select img_name, sum(subtract_dims) as distance_squared
        from (
            select img_name, (source - target) * (source - target) as subtract_dims
            from (
                select meta.img_name, emb.value as source, target.value as target
                from face_meta meta left join face_embeddings emb
                on meta.id = emb.face_id
                left join (
                    {target_statement}  
                ) target
                on emb.dimension = target.dimension
            )
        )
        group by img_name
    )
    where distance_squared < 100
    order by distance_squared asc
"""
    return select_statement
