"""A SIMULATOR of the Amazon ECS API, for tests: not ECS.

Nothing can run ECS here (moto's ECS never moves a deployment, LocalStack's is paid), so
Slipway's ECS target is tested against this HTTP-level simulation of the public API
(https://docs.aws.amazon.com/AmazonECS/latest/APIReference/), cross-checked with boto3
and botocore's waiters in tests/test_ecs_simulator.py. boto3 reaches it through
`endpoint_url` (`EcsSimulator.client()`). What it covers:

- the AWS JSON 1.1 protocol (`X-Amz-Target: AmazonEC2ContainerServiceV20141113.*`), any
  SigV4 signature accepted unchecked, errors as HTTP 400 `{"__type", "message"}`
  (ClusterNotFoundException, ServiceNotFoundException, ServiceNotActiveException,
  InvalidParameterException, ClientException, AccessDeniedException on demand);
- CreateCluster, DescribeClusters; RegisterTaskDefinition, DescribeTaskDefinition,
  ListTaskDefinitions, DeregisterTaskDefinition (families, revisions, ACTIVE/INACTIVE);
  CreateService, UpdateService, DeleteService, DescribeServices, ListServices; ListTasks,
  DescribeTasks (`failures` with reason MISSING where the real API answers them), List*
  in pages (`maxResults`, `nextToken`; ListServices 10 a page by default);
  TagResource, UntagResource, ListTagsForResource (tagging.py);
- deployments (`ecs-svc/...` ids, PRIMARY/ACTIVE, counts, `failedTasks`, `rolloutState`
  and `rolloutStateReason`), service events (newest first), a rolling update
  (minimumHealthyPercent 100, maximumPercent 200) and the deployment circuit breaker with
  rollback to the last COMPLETED deployment (controller.py);
- tasks as real containers on a Docker engine, health checks included (tasks.py), or as
  in-process fakes; scenario switches to make tasks fail, stall or be unhealthy;
- per service, a stable 127.0.0.1 port reaching its healthy running tasks
  (`EcsSimulator.service_url`).

Not covered: capacity providers, task placement, load balancers and target groups
(kept as given, no behaviour), blue/green and external deployment controllers,
RunTask/StopTask, the other containers of a task (only the first essential one runs),
other deploymentConfiguration percentages, the breaker's resetOnHealthyTask and
threshold configuration, CloudWatch alarms, ECR, IAM and STS (use moto for those).
"""

from tests.ecs_sim.simulator import EcsSimulator

__all__ = ["EcsSimulator"]
