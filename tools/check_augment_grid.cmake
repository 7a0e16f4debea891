# Runs `skinlesion augment-grid` and checks that a non-trivial PNG came out.
file(REMOVE ${OUT})
execute_process(COMMAND ${CLI} augment-grid --image ${IMAGE} --out ${OUT} --preset medical
                        --rows 2 --cols 3 --tile 96 --seed 7
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "augment-grid exited with ${rc}")
endif()
file(READ ${OUT} header LIMIT 8 HEX)
if(NOT header STREQUAL "89504e470d0a1a0a")
  message(FATAL_ERROR "${OUT} is not a PNG (header ${header})")
endif()
file(SIZE ${OUT} size)
if(size LESS 5000)
  message(FATAL_ERROR "${OUT} is suspiciously small: ${size} bytes")
endif()
