set +e
bash testsuite/scripts/device_library_cases.sh 2>&1 | grep "^==\|relative\|error" | paste - - | cut -c1-140
bash testsuite/scripts/device_library_check.sh 2>&1 | grep "^==\|relative\|median\|error\|compile" | cut -c1-160
