<?php
/**
 * REST routes under userrelay/v1: events (deliveries from the relay), ping, users (pages of
 * this site's users, for the initial sync) and flush.
 *
 * events, ping and users are public in WordPress terms (no logged-in user): the relay authenticates
 * with a Standard Webhooks signature made with this site's key, checked in permission_callback
 * over the raw body. flush is our own loopback, authenticated by a random token option.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Registers and serves the plugin's REST routes.
 */
final class UserRelay_REST {

	const REST_NAMESPACE = 'userrelay/v1';

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Applier.
	 *
	 * @var UserRelay_Applier
	 */
	private $applier;

	/**
	 * Outbox.
	 *
	 * @var UserRelay_Outbox
	 */
	private $outbox;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 * @param UserRelay_Applier  $applier  Applier.
	 * @param UserRelay_Outbox   $outbox   Outbox.
	 */
	public function __construct( UserRelay_Settings $settings, UserRelay_Applier $applier, UserRelay_Outbox $outbox ) {
		$this->settings = $settings;
		$this->applier  = $applier;
		$this->outbox   = $outbox;
	}

	/**
	 * Hooks route registration.
	 */
	public function register(): void {
		add_action( 'rest_api_init', array( $this, 'register_routes' ) );
	}

	/**
	 * Registers the routes.
	 */
	public function register_routes(): void {
		register_rest_route(
			self::REST_NAMESPACE,
			'/events',
			array(
				'methods'             => WP_REST_Server::CREATABLE,
				'callback'            => array( $this, 'receive_events' ),
				// Public: the relay has no WordPress login; its signature over the raw body is checked here.
				'permission_callback' => array( $this, 'check_signature' ),
				'args'                => array(
					'events' => array(
						// Items are checked one by one when applied: a malformed one must not fail the batch.
						'description' => __( 'The deliveries, as docs/protocol.md describes them.', 'userrelay' ),
						'type'        => 'array',
						'required'    => true,
					),
				),
			)
		);
		register_rest_route(
			self::REST_NAMESPACE,
			'/ping',
			array(
				'methods'             => WP_REST_Server::READABLE,
				'callback'            => array( $this, 'ping' ),
				// Public: signed by the relay like a delivery (over an empty body).
				'permission_callback' => array( $this, 'check_signature' ),
				'args'                => array(
					'check_relay' => array(
						'description' => __( 'Also send a signed ping to the relay and report its answer (the relay\'s connection test).', 'userrelay' ),
						'type'        => 'boolean',
						'default'     => false,
					),
				),
			)
		);
		register_rest_route(
			self::REST_NAMESPACE,
			'/users',
			array(
				'methods'             => WP_REST_Server::READABLE,
				'callback'            => array( $this, 'users' ),
				// Public: signed by the relay like a ping (over an empty body).
				'permission_callback' => array( $this, 'check_signature' ),
				'args'                => array(
					'after' => array(
						'description' => __( 'Last user ID of the previous page (0 for the first page).', 'userrelay' ),
						'type'        => 'integer',
						'minimum'     => 0,
						'default'     => 0,
					),
					'limit' => array(
						'description' => __( 'Users per page.', 'userrelay' ),
						'type'        => 'integer',
						'minimum'     => 1,
						'maximum'     => UserRelay_Directory::MAX_LIMIT,
						'default'     => 200,
					),
				),
			)
		);
		register_rest_route(
			self::REST_NAMESPACE,
			'/digests',
			array(
				'methods'             => WP_REST_Server::READABLE,
				'callback'            => array( $this, 'digests' ),
				// Public: signed by the relay like a ping (over an empty body).
				'permission_callback' => array( $this, 'check_signature' ),
				'args'                => array(
					'after'  => array(
						'description' => __( 'The last user id of the previous page (0 to start).', 'userrelay' ),
						'type'        => 'integer',
						'minimum'     => 0,
						'default'     => 0,
					),
					'limit'  => array(
						'description' => __( 'Users per page.', 'userrelay' ),
						'type'        => 'integer',
						'minimum'     => 1,
						'maximum'     => UserRelay_Digests::MAX_LIMIT,
						'default'     => 500,
					),
					'fields' => array(
						'description' => __( 'Field groups to digest: profile, roles, password, meta (or meta:key1,key2).', 'userrelay' ),
						'type'        => 'string',
						'default'     => 'profile,roles',
					),
				),
			)
		);
		register_rest_route(
			self::REST_NAMESPACE,
			'/snapshots',
			array(
				'methods'             => WP_REST_Server::CREATABLE,
				'callback'            => array( $this, 'snapshots' ),
				// Public: signed by the relay over the raw body, like a delivery.
				'permission_callback' => array( $this, 'check_signature' ),
			)
		);
		register_rest_route(
			self::REST_NAMESPACE,
			'/flush',
			array(
				'methods'             => WP_REST_Server::CREATABLE,
				'callback'            => array( $this, 'flush' ),
				// Public: our own non-blocking loopback (no cookies); the token option proves it is us.
				'permission_callback' => array( $this, 'check_flush_token' ),
				'args'                => array(
					'token' => array(
						'description' => __( 'The flush token of this site.', 'userrelay' ),
						'type'        => 'string',
						'required'    => true,
					),
				),
			)
		);
	}

	/**
	 * permission_callback of the signed routes.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return true|WP_Error
	 */
	public function check_signature( WP_REST_Request $request ) {
		return UserRelay_Signature::verify(
			$this->settings->hmac_key(),
			$request->get_header( 'webhook-id' ),
			$request->get_header( 'webhook-timestamp' ),
			$request->get_header( 'webhook-signature' ),
			(string) $request->get_body()
		);
	}

	/**
	 * permission_callback of the flush route.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return true|WP_Error
	 */
	public function check_flush_token( WP_REST_Request $request ) {
		$token = $request->get_param( 'token' );
		if ( is_string( $token ) && hash_equals( UserRelay_Outbox::flush_token(), $token ) ) {
			return true;
		}
		return new WP_Error( 'userrelay_bad_flush_token', __( 'The flush token is wrong.', 'userrelay' ), array( 'status' => 403 ) );
	}

	/**
	 * POST /events: applies a batch, one result per event.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response|WP_Error
	 */
	public function receive_events( WP_REST_Request $request ) {
		// The signature covers the raw body: read the events from it, not from parsed params.
		$document = json_decode( (string) $request->get_body(), true );
		if ( ! is_array( $document ) || ! isset( $document['events'] ) || ! is_array( $document['events'] ) || ! wp_is_numeric_array( $document['events'] ) ) {
			return new WP_Error( 'userrelay_bad_body', __( 'Expected a JSON body {"events": [...]}.', 'userrelay' ), array( 'status' => 400 ) );
		}
		if ( function_exists( 'set_time_limit' ) ) {
			@set_time_limit( 60 ); // phpcs:ignore WordPress.PHP.NoSilencedErrors.Discouraged -- May be disabled; the applier keeps to its own budget anyway.
		}
		return new WP_REST_Response( array( 'results' => $this->applier->apply_batch( $document['events'] ) ), 200 );
	}

	/**
	 * GET /ping: who we are, what we can take and our clock (the relay's connection test).
	 * With check_relay, also whether the relay accepts a ping signed here (the other way).
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response
	 */
	public function ping( WP_REST_Request $request ) {
		$answer = array(
			'site'         => $this->settings->site(),
			'wordpress'    => get_bloginfo( 'version' ),
			'plugin'       => USERRELAY_PLUGIN_VERSION,
			'hash_formats' => UserRelay_Delivery_Checks::hash_formats(),
			'time'         => microtime( true ),
		);
		if ( $request->get_param( 'check_relay' ) ) {
			$answer['relay_check'] = ( new UserRelay_Relay_Client( $this->settings ) )->relay_check();
		}
		return new WP_REST_Response( $answer, 200 );
	}

	/**
	 * GET /users: one page of this site's users, for the relay's initial sync.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response
	 */
	public function users( WP_REST_Request $request ) {
		$page = ( new UserRelay_Directory( $this->settings ) )->page( (int) $request->get_param( 'after' ), (int) $request->get_param( 'limit' ) );
		return new WP_REST_Response( $page, 200 );
	}

	/**
	 * GET /digests: one page of per-user digests (reconciliation; see UserRelay_Digests).
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response
	 */
	public function digests( WP_REST_Request $request ) {
		$page = ( new UserRelay_Digests( $this->settings ) )->page( (int) $request->get_param( 'after' ), (int) $request->get_param( 'limit' ), (string) $request->get_param( 'fields' ) );
		return new WP_REST_Response( $page, 200 );
	}

	/**
	 * POST /snapshots: full snapshots of the users whose ids the body lists ({"ids": [...]}).
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_REST_Response|WP_Error
	 */
	public function snapshots( WP_REST_Request $request ) {
		$document = json_decode( (string) $request->get_body(), true );
		if ( ! is_array( $document ) || ! isset( $document['ids'] ) || ! is_array( $document['ids'] ) ) {
			return new WP_Error( 'userrelay_bad_body', __( 'Expected a JSON body {"ids": [...]}.', 'userrelay' ), array( 'status' => 400 ) );
		}
		return new WP_REST_Response( array( 'users' => ( new UserRelay_Digests( $this->settings ) )->snapshots( $document['ids'] ) ), 200 );
	}

	/**
	 * POST /flush: sends the outbox. Nobody waits for this answer.
	 *
	 * @return WP_REST_Response
	 */
	public function flush() {
		ignore_user_abort( true ); // The kicking request hung up at once; carry on regardless.
		if ( function_exists( 'set_time_limit' ) ) {
			@set_time_limit( 120 ); // phpcs:ignore WordPress.PHP.NoSilencedErrors.Discouraged -- May be disabled; the flush keeps to its own budget.
		}
		if ( ! $this->settings->is_configured() ) {
			return new WP_REST_Response( array( 'problems' => $this->settings->problems() ), 200 );
		}
		return new WP_REST_Response( $this->outbox->flush( UserRelay_Outbox::FLUSH_BUDGET, UserRelay_Outbox::LINGER ), 200 );
	}
}
